package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// newService opens a service on a fresh home with the real catalog and a
// real posix repository.
func newService(t *testing.T) *Service {
	t.Helper()
	cfg, err := LoadConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Workers = 2
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writeImage makes an image file of size bytes: pseudo-random data with
// zero stretches, from seed.
func writeImage(t *testing.T, path string, size int64, seed uint64) []byte {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i+8 <= len(b); i += 8 {
		if (i/(256<<10))%4 == 3 { // every fourth 256 KiB stays zero
			continue
		}
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// scribble overwrites n scattered 64 KiB pieces of the image at path.
func scribble(t *testing.T, path string, img []byte, n int, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	for range n {
		off := r.IntN(len(img) - 64<<10)
		for i := off; i < off+64<<10; i++ {
			img[i] = byte(r.Uint32())
		}
	}
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func restoreBytes(t *testing.T, s *Service, backupID string) []byte {
	t.Helper()
	rv, err := s.Restore(context.Background(), RestoreRequest{Backup: backupID}, nil)
	if err != nil {
		t.Fatalf("restore %s: %v", backupID, err)
	}
	v, err := s.ShowVolume(context.Background(), rv.VolumeID)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(v.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteVolume(context.Background(), rv.VolumeID); err != nil {
		t.Fatal(err)
	}
	return b
}

// mustCheck runs the reference recount and fails on any problem.
func mustCheck(t *testing.T, s *Service) CheckReport {
	t.Helper()
	reps, err := s.Check(context.Background(), CheckRequest{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reps {
		if len(r.Problems) > 0 {
			t.Fatalf("check found problems:\n%s", strings.Join(r.Problems, "\n"))
		}
	}
	return reps[0]
}

func packCount(t *testing.T, s *Service) int {
	t.Helper()
	n := 0
	filepath.Walk(filepath.Join(s.cfg.Home, "repository", "packs"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(fi.Name(), ".tmp-") {
			n++
		}
		return nil
	})
	return n
}

func TestIncrementalChain(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 8<<20, 1)
	if _, err := s.Manage(ctx, ManageRequest{Name: "vol", Source: img}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil); err == nil ||
		!strings.Contains(err.Error(), "no available backup") {
		t.Fatalf("incremental without a full backup: got %v", err)
	}
	if bs, _ := s.ListBackups(ctx, "", false); len(bs) != 0 {
		t.Fatalf("refused incremental left %d backups", len(bs))
	}

	var ids []string
	var states [][]byte
	full, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Name: "full"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, states = append(ids, full.ID), append(states, bytes.Clone(data))
	for i := range 3 {
		scribble(t, img, data, 5, uint64(i))
		b, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !b.IsIncremental || b.ParentID == nil || *b.ParentID != ids[len(ids)-1] {
			t.Fatalf("incremental %d: is_incremental=%v parent=%v, want parent %s", i, b.IsIncremental, b.ParentID, ids[len(ids)-1])
		}
		// 5 scattered 64 KiB writes touch at most 10 chunks.
		if b.StoredBytes > 10*(64<<10)+4096 {
			t.Errorf("incremental %d stored %d bytes for 5 scattered 64 KiB writes", i, b.StoredBytes)
		}
		ids, states = append(ids, b.ID), append(states, bytes.Clone(data))
		mustCheck(t, s)
	}
	for i, id := range ids {
		if got := restoreBytes(t, s, id); !bytes.Equal(got, states[i]) {
			t.Fatalf("restore of backup %d differs from the volume at that time", i)
		}
	}
	if b, _ := s.ShowBackup(ctx, ids[0]); !b.HasDependentBackups {
		t.Error("full backup does not report has_dependent_backups")
	}
	for _, id := range ids[:3] {
		_, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{id}})
		if err == nil || !strings.Contains(err.Error(), "Incremental backups exist for this backup") {
			t.Fatalf("delete of %s with dependents: got %v", id, err)
		}
	}
	for i := len(ids) - 1; i >= 0; i-- {
		if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{ids[i]}}); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
		mustCheck(t, s)
		for j := 0; j < i; j++ {
			if got := restoreBytes(t, s, ids[j]); !bytes.Equal(got, states[j]) {
				t.Fatalf("after deleting %d, restore of %d differs", i, j)
			}
		}
	}
	if n := packCount(t, s); n != 0 {
		t.Errorf("%d packs left after deleting every backup", n)
	}
}

// TestDeleteChainAtOnce: naming a chain's backups in any order deletes
// them all, children first; a name that is not a backup is refused without
// stopping the others.
func TestDeleteChainAtOnce(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 4<<20, 9)
	if _, err := s.Manage(ctx, ManageRequest{Name: "vol", Source: img}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		b, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Name: fmt.Sprint("b", i), Incremental: i > 0}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
		scribble(t, img, data, 2, uint64(i))
	}
	other, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Name: "other"}, nil) // a second full: not in the chain
	if err != nil {
		t.Fatal(err)
	}
	// Parent first, by name and id, with a missing ref in the middle.
	got, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{"b0", "no-such-backup", ids[2], "b1"}})
	if err == nil || !strings.Contains(err.Error(), "no-such-backup") || strings.Contains(err.Error(), "Incremental backups exist") {
		t.Fatalf("delete b0, missing, b2, b1: %v; want only the missing name refused", err)
	}
	var order []string
	for _, b := range got {
		order = append(order, b.ID)
	}
	if want := []string{ids[2], ids[1], ids[0]}; strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("deleted %v, want children first %v", order, want)
	}
	left, _ := s.ListBackups(ctx, "", false)
	if len(left) != 1 || left[0].ID != other.ID {
		t.Errorf("after deleting the chain, backups %+v; want only %s", left, other.ID)
	}
	mustCheck(t, s)
}

func TestGrownAndShrunkVolume(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 4<<20, 2)
	s.Manage(ctx, ManageRequest{Name: "vol", Source: img})
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil); err != nil {
		t.Fatal(err)
	}
	grown := append(bytes.Clone(data), bytes.Repeat([]byte("grow"), 1<<20)...)
	grown = append(grown, bytes.Repeat([]byte{1, 2, 3, 4}, 128)...) // not a whole chunk
	os.WriteFile(img, grown, 0o600)
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.SizeBytes != int64(len(grown)) {
		t.Fatalf("grown backup size %d, want %d", b.SizeBytes, len(grown))
	}
	if got := restoreBytes(t, s, b.ID); !bytes.Equal(got, grown) {
		t.Fatal("restore of grown volume differs")
	}
	shrunk := data[:1<<20+512]
	os.WriteFile(img, shrunk, 0o600)
	b, err = s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.StoredBytes > 64<<10 {
		t.Errorf("shrunk incremental stored %d bytes; only the short last chunk is new", b.StoredBytes)
	}
	if got := restoreBytes(t, s, b.ID); !bytes.Equal(got, shrunk) {
		t.Fatal("restore of shrunk volume differs")
	}
	if v, _ := s.ShowVolume(ctx, "vol"); v.SizeBytes != int64(len(shrunk)) {
		t.Errorf("volume size %d after shrinking, want %d", v.SizeBytes, len(shrunk))
	}
	mustCheck(t, s)
}

func TestFailedBackupHoldsNoReferences(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	writeImage(t, img, 2<<20, 3)
	s.Manage(ctx, ManageRequest{Name: "vol", Source: img})
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil); err != nil {
		t.Fatal(err)
	}
	// The source cannot be read: the next backup must fail cleanly. (A
	// source that is gone is refused before any backup is made: see
	// TestSourceGone.)
	s.openSource = func(*index.Volume) (volume.Source, error) { return nil, errors.New("the disk went away") }
	_, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	if err == nil {
		t.Fatal("backup of a missing source succeeded")
	}
	bs, _ := s.ListBackups(ctx, "", false)
	if len(bs) != 2 || bs[0].Status != index.StatusError || bs[0].FailReason == nil {
		t.Fatalf("failed backup: got %+v", bs[0])
	}
	if v, _ := s.ShowVolume(ctx, "vol"); v.Status != index.StatusAvailable {
		t.Errorf("volume status after a failed backup: %s", v.Status)
	}
	mustCheck(t, s)
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{bs[0].ID}}); err != nil {
		t.Fatalf("deleting the failed backup: %v", err)
	}
}

func TestCancelledBackup(t *testing.T) {
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	writeImage(t, img, 16<<20, 4)
	s.Manage(context.Background(), ManageRequest{Name: "vol", Source: img})
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, func(Progress) {
		if n++; n == 1 {
			cancel()
		}
	})
	cancel()
	if err == nil {
		t.Skip("backup finished before the first progress report; nothing to cancel")
	}
	bs, _ := s.ListBackups(context.Background(), "", false)
	if len(bs) != 1 || bs[0].Status != index.StatusError || bs[0].FailReason == nil || *bs[0].FailReason != "cancelled by the user" {
		t.Fatalf("cancelled backup: %+v", bs)
	}
	mustCheck(t, s)
	if _, err := s.GC(context.Background(), GCRequest{}); err != nil {
		t.Fatal(err)
	}
	if n := packCount(t, s); n != 0 {
		t.Errorf("repo-gc left %d packs of a cancelled backup", n)
	}
}

// TestGCKeepsUnknownRecords: while the repository holds backups the
// catalog does not know (mid disaster recovery, or another home's), GC
// keeps every chunk their manifests name, and refuses to delete anything
// while a record's manifest cannot be read.
func TestGCKeepsUnknownRecords(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s)
	s = loseCatalog(t, s) // every record is unknown now, every pack unreferenced
	packs := packFiles(t, s)
	zero := "0"
	reps, err := s.GC(ctx, GCRequest{Grace: zero})
	if err != nil {
		t.Fatal(err)
	}
	if got := packFiles(t, s); !slices.Equal(got, packs) || reps[0].OrphansDeleted != 0 {
		t.Fatalf("repo-gc with unknown records deleted packs: %d -> %d (%+v)", len(packs), len(got), reps[0])
	}

	manifest := filepath.Join(s.cfg.Home, "repository", "manifests", c.ids[2])
	if err := os.Rename(manifest, manifest+".away"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, GCRequest{Grace: zero}); err == nil || !strings.Contains(err.Error(), c.ids[2]) || !strings.Contains(err.Error(), "backup-delete --force") {
		t.Fatalf("repo-gc with an unreadable record: got %v, want a refusal naming %s and the way out", err, c.ids[2])
	}
	if got := packFiles(t, s); !slices.Equal(got, packs) {
		t.Fatalf("refused repo-gc changed packs from %d to %d", len(packs), len(got))
	}
	os.Rename(manifest+".away", manifest)
	for _, u := range c.urls {
		if _, err := s.ImportBackup(ctx, ImportRequest{BackupService: "volback.drivers.posix", BackupURL: u}); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range c.ids {
		if got := restoreBytes(t, s, id); !bytes.Equal(got, c.states[i]) {
			t.Fatalf("backup %d differs after repo-gc ran with it unknown", i)
		}
	}
	mustCheck(t, s)
}

// manifestRefs is a backup's whole reference list (tests' manifests are small).
func manifestRefs(t *testing.T, s *Service, r *repository, backupID string, m *chunkstore.Manifest) []chunkstore.ID {
	t.Helper()
	var ids []chunkstore.ID
	err := r.store.WalkRefs(context.Background(), backupID, m, 0, func(_ int64, x []chunkstore.ID) error {
		ids = append(ids, x...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}
