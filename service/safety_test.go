package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// hookedSource calls onRead before the first ReadAt.
type hookedSource struct {
	volume.Source
	once   sync.Once
	onRead func()
}

func (h *hookedSource) ReadAt(p []byte, off int64) (int, error) {
	h.once.Do(h.onRead)
	return h.Source.ReadAt(p, off)
}

// hookSources makes every backup of s call onRead before it reads.
func hookSources(s *Service, onRead func()) {
	s.openSource = func(v *index.Volume) (volume.Source, error) {
		src, err := volume.OpenSource(v.Path)
		if err != nil {
			return nil, err
		}
		return &hookedSource{Source: src, onRead: onRead}, nil
	}
}

func manageImage(t *testing.T, s *Service, name string, size int64, seed uint64) (string, []byte) {
	t.Helper()
	img := filepath.Join(t.TempDir(), name+".img")
	data := writeImage(t, img, size, seed)
	if _, err := s.Manage(context.Background(), ManageRequest{Name: name, Source: img}); err != nil {
		t.Fatal(err)
	}
	return img, data
}

func mustBackup(t *testing.T, s *Service, vol string) *BackupView {
	t.Helper()
	b, err := s.CreateBackup(context.Background(), BackupRequest{Volume: vol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTwoZonesOneRepository: zones nova and other name one repository. A
// repo-gc of other while a backup runs in nova waits for it (one lock per
// repository, not per zone), and every backup restores.
func TestTwoZonesOneRepository(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	repo := filepath.Join(t.TempDir(), "repo")
	conf := fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\n[zones.other]\nrepository = \"file://%s/\"\n", repo, repo)
	writeFile(t, filepath.Join(home, ConfigName), []byte(conf))
	cfg, err := LoadConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Workers = 2
	s := reopen(t, cfg)
	img, data := manageImage(t, s, "vol", 4<<20, 21)
	first := mustBackup(t, s, "vol")
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{first.ID}}); err != nil {
		t.Fatal(err)
	}
	b1 := mustBackup(t, s, "vol")
	scribble(t, img, data, 30, 22)
	data2 := bytes.Clone(data)

	reading := make(chan struct{})
	goOn := make(chan struct{})
	hookSources(s, func() { close(reading); <-goOn })
	var b2 *BackupView
	var berr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		b2, berr = s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	}()
	<-reading // the backup holds its lock and has looked up nothing yet
	gcDone := make(chan error, 1)
	go func() {
		zero, all := "0", 1.0
		_, err := s.GC(ctx, GCRequest{Zone: "other", Grace: zero, RepackBelow: &all})
		gcDone <- err
	}()
	select {
	case err := <-gcDone:
		t.Fatalf("repo-gc of zone other ran while a backup of zone nova held the repository: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(goOn)
	<-done
	if berr != nil {
		t.Fatal(berr)
	}
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string][]byte{b1.ID: nil, b2.ID: data2} {
		got := restoreBytes(t, s, id)
		if want != nil && !bytes.Equal(got, want) {
			t.Fatalf("backup %s differs after repo-gc --zone other", id)
		}
	}
	mustCheck(t, s)
}

// TestTwoHomesOneRepository: two catalogs on one repository directory
// (an NFS export shared by two hosts). Each keeps the other's backups
// alive through their records, GC in one waits for a backup in the other,
// repacks are found by the other through the GC generation, and every
// backup restores in its home.
func TestTwoHomesOneRepository(t *testing.T) {
	ctx := context.Background()
	repo := filepath.Join(t.TempDir(), "repo")
	open := func() *Service {
		home := t.TempDir()
		writeFile(t, filepath.Join(home, ConfigName), []byte(fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\n", repo)))
		cfg, err := LoadConfig(home)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Workers = 2
		return reopen(t, cfg)
	}
	a, b := open(), open()
	imgA, dataA := manageImage(t, a, "va", 4<<20, 31)
	_, dataB := manageImage(t, b, "vb", 4<<20, 32)
	writeFile(t, imgA, dataB) // A's first backup stores the chunks B's backups also hold
	bA1 := mustBackup(t, a, "va")
	bB1 := mustBackup(t, b, "vb")
	writeFile(t, imgA, dataA)
	bA2 := mustBackup(t, a, "va")
	// A forgets its first backup: its packs now hold only chunks that
	// B's record needs; a repacking GC in A must keep (copy) them.
	if _, err := a.DeleteBackups(ctx, DeleteRequest{Refs: []string{bA1.ID}}); err != nil {
		t.Fatal(err)
	}
	all := 1.0
	if _, err := a.GC(ctx, GCRequest{Grace: "0", RepackBelow: &all}); err != nil {
		t.Fatal(err)
	}
	// A backup in B runs while GC in A waits for it.
	reading, goOn := make(chan struct{}), make(chan struct{})
	hookSources(b, func() { close(reading); <-goOn })
	done := make(chan error, 1)
	var bB2 *BackupView
	go func() {
		var err error
		bB2, err = b.CreateBackup(ctx, BackupRequest{Volume: "vb"}, nil)
		done <- err
	}()
	<-reading
	gcDone := make(chan error, 1)
	go func() { _, err := a.GC(ctx, GCRequest{Grace: "0", RepackBelow: &all}); gcDone <- err }()
	select {
	case err := <-gcDone:
		t.Fatalf("repo-gc in home A ran while a backup of home B held the repository: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(goOn)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    *Service
		id   string
		want []byte
	}{{a, bA2.ID, dataA}, {b, bB1.ID, dataB}, {b, bB2.ID, dataB}} {
		if got := restoreBytes(t, c.s, c.id); !bytes.Equal(got, c.want) {
			t.Fatalf("backup %s differs after GC in the other home", c.id)
		}
	}
	mustCheck(t, a)
	mustCheck(t, b)
}

// TestMissingRepositoryRefused: a zone whose repository directory is gone
// (an NFS export not mounted) or holds another repository is refused with
// the zone, URL and expected id, and nothing is created in its place.
func TestMissingRepositoryRefused(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	manageImage(t, s, "vol", 1<<20, 41)
	b := mustBackup(t, s, "vol")
	repoID := s.repoID(t)
	cfg := s.cfg
	s.Close()
	repo := filepath.Join(cfg.Home, "repository")
	if err := os.Rename(repo, repo+".unmounted"); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, cfg)
	for what, do := range map[string]func() error{
		"backup-create": func() error { _, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil); return err },
		"backup-restore": func() error {
			_, err := s.Restore(ctx, RestoreRequest{Backup: b.ID}, nil)
			return err
		},
		"repo-gc": func() error { _, err := s.GC(ctx, GCRequest{}); return err },
	} {
		err := do()
		if err == nil {
			t.Fatalf("%s with the repository directory gone succeeded", what)
		}
		for _, w := range []string{`"nova"`, repoID, "mount", "file://" + repo} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", what, err, w)
			}
		}
		if _, err := os.Stat(repo); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s re-created the repository directory", what)
		}
	}
	// Another repository at the URL is refused too.
	other := t.TempDir()
	o := newServiceAt(t, other)
	manageImage(t, o, "ov", 1<<20, 42)
	mustBackup(t, o, "ov")
	o.Close()
	if err := os.Rename(filepath.Join(other, "repository"), repo); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil); err == nil || !strings.Contains(err.Error(), "holds repository") || !strings.Contains(err.Error(), repoID) {
		t.Fatalf("backup into another repository: %v", err)
	}
	os.RemoveAll(repo)
	if err := os.Rename(repo+".unmounted", repo); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, s, b.ID); len(got) != 1<<20 {
		t.Fatal("restore once the repository is back")
	}
}

func newServiceAt(t *testing.T, home string) *Service {
	t.Helper()
	cfg, err := LoadConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Workers = 2
	return reopen(t, cfg)
}

// TestConcurrentRestoresOneVolume: restores into one volume, and deletes
// of one backup, racing many times: exactly one wins each time (status
// checked and claimed in one transaction; a loser may also find the image
// write-locked by the winner) and the others change nothing.
func TestConcurrentRestoresOneVolume(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	_, data := manageImage(t, s, "src", 1<<20, 51)
	b := mustBackup(t, s, "src")
	tgt := filepath.Join(t.TempDir(), "tgt.img")
	writeFile(t, tgt, make([]byte, 1<<20))
	if _, err := s.Manage(ctx, ManageRequest{Name: "tgt", Source: tgt}); err != nil {
		t.Fatal(err)
	}
	const racers = 4
	for round := range 10 {
		var ok atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := s.Restore(ctx, RestoreRequest{Backup: b.ID, Volume: "tgt"}, nil); err == nil {
					ok.Add(1)
				} else if !strings.Contains(err.Error(), "restoring") && !strings.Contains(err.Error(), "in use") {
					t.Errorf("round %d: a losing restore failed otherwise: %v", round, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if ok.Load() < 1 {
			t.Fatalf("round %d: no restore succeeded", round)
		}
		// They may have run one after another; never two at once (checked
		// by the claims); the volume holds the backup either way.
		got, _ := os.ReadFile(tgt)
		if !bytes.Equal(got, data) {
			t.Fatalf("round %d: target differs", round)
		}
	}
	// Concurrent deletes of one backup: one deletes, the others are refused.
	for round := range 10 {
		bb := mustBackup(t, s, "src")
		var ok atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{bb.ID}}); err == nil {
					ok.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		if ok.Load() != 1 {
			t.Fatalf("round %d: %d concurrent deletes of one backup succeeded, want 1", round, ok.Load())
		}
	}
	mustCheck(t, s)
}

// TestRestoreClaimIsAtomic: while a restore into a volume runs, a second
// restore into it and a backup of it are refused, naming the status; and
// the backup being restored cannot be restored twice at once.
func TestRestoreClaimIsAtomic(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	manageImage(t, s, "src", 1<<20, 52)
	b := mustBackup(t, s, "src")
	b2 := mustBackup(t, s, "src")
	tgt := filepath.Join(t.TempDir(), "tgt.img")
	writeFile(t, tgt, make([]byte, 1<<20))
	s.Manage(ctx, ManageRequest{Name: "tgt", Source: tgt})
	var vol *index.Volume
	s.cat.View(func(tx *index.Tx) (err error) { vol, err = findVolume(tx, caller(ctx), "tgt"); return err })
	// Claim as a running restore does, then race the refusals against it.
	_, tg, err := s.claimTarget(ctx, "tgt", mustIndexBackup(t, s, b.ID), func(tx *index.Tx) error { return claimBackup(tx, b.ID) })
	if err != nil {
		t.Fatal(err)
	}
	tg.Close()
	before := catalogState(t, s)
	for what, do := range map[string]func() error{
		"second restore into the volume": func() error {
			_, err := s.Restore(ctx, RestoreRequest{Backup: b2.ID, Volume: "tgt"}, nil)
			return err
		},
		"restore of the backup being restored": func() error {
			_, err := s.Restore(ctx, RestoreRequest{Backup: b.ID}, nil)
			return err
		},
		"backup of the volume": func() error { _, err := s.CreateBackup(ctx, BackupRequest{Volume: vol.ID}, nil); return err },
		"delete of the volume": func() error { _, err := s.DeleteVolume(ctx, "tgt"); return err },
	} {
		if err := do(); err == nil || !strings.Contains(err.Error(), "restoring") {
			t.Errorf("%s during a restore: %v, want a refusal naming the status", what, err)
		}
	}
	if after := catalogState(t, s); after != before {
		t.Error("refusals changed the catalog")
	}
	s.endRestore(vol.ID, b.ID, index.StatusAvailable)
}

func mustIndexBackup(t *testing.T, s *Service, id string) *index.Backup {
	t.Helper()
	var b *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { b, err = tx.Backup(id); return err }); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFailedBackupRemovesItsPacks: a cancelled backup removes the packs it
// wrote once it can take the exclusive lock; while another holder keeps
// it from that, repo-check reports them and repo-gc removes them later
// (whatever the grace period: they are known to be a failed backup's).
func TestFailedBackupRemovesItsPacks(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	s.cfg.packSize = 256 << 10
	manageImage(t, s, "vol", 8<<20, 61)
	for _, blocked := range []bool{false, true} {
		r, err := s.repoFor(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		r.store.SetPackSize(256 << 10)
		var other *chunkstore.Lock
		cctx, cancel := context.WithCancel(ctx)
		reads := 0
		s.openSource = func(v *index.Volume) (volume.Source, error) {
			src, err := volume.OpenSource(v.Path)
			return &countingSource{Source: src, at: 6, fn: func() {
				time.Sleep(100 * time.Millisecond) // let the uploads of the first blocks finish
				if blocked {                       // another process reads the repository now
					other, _ = r.store.Lock(ctx, chunkstore.LockRequest{Purpose: "other reader"})
				}
				cancel()
			}, n: &reads}, err
		}
		_, err = s.CreateBackup(cctx, BackupRequest{Volume: "vol"}, nil)
		cancel()
		if err == nil {
			t.Fatal("the cancelled backup succeeded")
		}
		if !blocked {
			if n := packCount(t, s); n != 0 {
				t.Fatalf("a cancelled backup left %d packs", n)
			}
			continue
		}
		if other == nil {
			t.Fatal("no lock taken")
		}
		reps, err := s.Check(ctx, CheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if reps[0].UnreferencedPacks == 0 || reps[0].UnreferencedBytes == 0 || reps[0].UnreferencedPacks != packCount(t, s) {
			t.Fatalf("repo-check reports %d unreferenced packs (%d bytes), the repository holds %d", reps[0].UnreferencedPacks, reps[0].UnreferencedBytes, packCount(t, s))
		}
		other.Release()
		if _, err := s.GC(ctx, GCRequest{}); err != nil { // default grace: an hour
			t.Fatal(err)
		}
		if n := packCount(t, s); n != 0 {
			t.Fatalf("repo-gc left %d packs of a failed backup", n)
		}
	}
	mustCheck(t, s)
}

// TestBackupConsistency: a live read of a volume nobody holds says in
// backup-show whether the image file changed while it was read (then the
// backup is not crash-consistent); a backup with --force is read from a
// snapshot and stays crash-consistent even when the image is written.
func TestBackupConsistency(t *testing.T) {
	s := newService(t)
	img, _ := manageImage(t, s, "vol", 1<<20, 71)
	write := func() {
		f, _ := os.OpenFile(img, os.O_WRONLY, 0)
		f.WriteAt([]byte("written during the backup"), 4096)
		f.Close()
	}
	for _, tc := range []struct {
		force, writes bool
		want          string
	}{{false, false, ConsistencyUnchanged}, {false, true, ConsistencyWritten}, {true, true, ConsistencyCrash}} {
		hookSources(s, func() {})
		if tc.writes {
			hookSources(s, write)
		}
		b, err := s.CreateBackup(context.Background(), BackupRequest{Volume: "vol", Force: tc.force}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b.Consistency == nil || *b.Consistency != tc.want || b.ConsistencyDetail == nil {
			t.Errorf("force=%v writes=%v: consistency %v (%v), want %q", tc.force, tc.writes, b.Consistency, b.ConsistencyDetail, tc.want)
		}
	}
}

// TestErrorDeleting: a delete that fails half-way ends error_deleting (not
// stuck deleting), and a later delete finishes it.
func TestErrorDeleting(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	manageImage(t, s, "vol", 1<<20, 81)
	b := mustBackup(t, s, "vol")
	manifest := filepath.Join(s.cfg.Home, "repository", "manifests", b.ID)
	if err := os.Rename(manifest, manifest+".away"); err != nil {
		t.Fatal(err)
	}
	_, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.ID}})
	if err == nil || !strings.Contains(err.Error(), "error_deleting") {
		t.Fatalf("delete with an unreadable manifest: %v", err)
	}
	if got, _ := s.ShowBackup(ctx, b.ID); got.Status != index.StatusErrorDeleting {
		t.Fatalf("status after a failed delete: %s", got.Status)
	}
	os.Rename(manifest+".away", manifest)
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.ID}}); err != nil {
		t.Fatalf("retrying an error_deleting backup: %v", err)
	}
	mustCheck(t, s)
	if n := packCount(t, s); n != 0 {
		t.Errorf("%d packs left", n)
	}
}

// TestRollbackFinishesInBackground: a rollback that fails half-way is
// retried by the running service, not only at the next start.
func TestRollbackFinishesInBackground(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	manageImage(t, s, "vol", 1<<20, 91)
	rollbackRetry = 50 * time.Millisecond
	var manifest string
	afterRefsHook = func(b *index.Backup) error {
		manifest = filepath.Join(s.cfg.Home, "repository", chunkstore.SegmentName(b.ID, 0))
		os.Rename(manifest, manifest+".away") // the rollback will not find the references
		return errors.New("injected failure after the references counted")
	}
	defer func() { afterRefsHook = nil }()
	_, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	afterRefsHook = nil
	if err == nil {
		t.Fatal("injected failure ignored")
	}
	bs, _ := s.ListBackups(ctx, "", false)
	if len(bs) != 1 || bs[0].Status != index.StatusCreating {
		t.Fatalf("after a failed rollback: %+v, want one backup still creating", bs)
	}
	os.Rename(manifest+".away", manifest)
	deadline := time.Now().Add(10 * time.Second)
	for { // the rollback, then the sweep of its packs
		bs, _ = s.ListBackups(ctx, "", false)
		if bs[0].Status == index.StatusError && packCount(t, s) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollback was not finished in the background: %s, %d packs left", bs[0].Status, packCount(t, s))
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustCheck(t, s)
}

// TestDamageAndRepair: a corrupt chunk found by a restore is recorded as
// lost at once and its backups as damaged; the next backup stores it
// again (no silent dedup), which heals them; damage that
// cannot heal is rewritten to a readable backup by repo-repair --rewrite,
// and backup-delete --force removes a backup whose manifest is gone.
func TestDamageAndRepair(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img, data := manageImage(t, s, "vol", 2<<20, 101)
	b := mustBackup(t, s, "vol")
	corruptFirstChunk(t, s)
	if _, err := s.Restore(ctx, RestoreRequest{Backup: b.ID}, nil); err == nil || !strings.Contains(err.Error(), "repo-repair") {
		t.Fatalf("restore of a corrupt backup: %v", err)
	}
	if v, _ := s.ShowBackup(ctx, b.ID); !v.Damaged || v.DamageReason == nil {
		t.Fatalf("backup after a corrupt chunk was found: damaged=%v", v.Damaged)
	}
	if reps, _ := s.Check(ctx, CheckRequest{}); len(reps[0].Problems) == 0 {
		t.Fatal("repo-check is clean with a lost chunk")
	}
	b2 := mustBackup(t, s, "vol") // the same data: the lost chunk must be stored again
	if b2.StoredBytes == 0 {
		t.Fatal("the next backup deduplicated against the lost chunk")
	}
	// That backup healed the damaged one itself (issue 11): repo-repair
	// finds nothing left to heal.
	if v, _ := s.ShowBackup(ctx, b.ID); v.Damaged {
		t.Fatalf("backup %s still damaged after a backup stored its lost chunk again: %v", b.ID, *v.DamageReason)
	}
	reps, err := s.Repair(ctx, RepairRequest{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(reps[0].Healed) != 0 || len(reps[0].Damaged) != 0 {
		t.Fatalf("repo-repair: %+v, want nothing damaged or healed", reps[0])
	}
	for _, id := range []string{b.ID, b2.ID} {
		if got := restoreBytes(t, s, id); !bytes.Equal(got, data) {
			t.Fatalf("backup %s after healing differs", id)
		}
	}
	mustCheck(t, s)

	// Damage that does not heal: rewrite what is readable.
	scribble(t, img, data, 4, 102)
	b3 := mustBackup(t, s, "vol")
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.ID, b2.ID}}); err != nil {
		t.Fatal(err)
	}
	lost := corruptFirstChunk(t, s)
	if reps, err = s.Repair(ctx, RepairRequest{ReadData: true, Rewrite: true}); err != nil {
		t.Fatal(err)
	}
	if reps[0].ChunksLost != 1 || len(reps[0].Rewritten) != 1 {
		t.Fatalf("repo-repair --rewrite: %+v", reps[0])
	}
	want := bytes.Clone(data)
	clear(want[lost*(64<<10) : (lost+1)*(64<<10)])
	if got := restoreBytes(t, s, reps[0].Rewritten[0]); !bytes.Equal(got, want) {
		t.Fatal("the rewritten backup is not the damaged one with its lost chunk zeroed")
	}
	// The damaged original goes with --force once its manifest is gone.
	manifest := filepath.Join(s.cfg.Home, "repository", "manifests", b3.ID)
	os.Remove(manifest)
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b3.ID}}); err == nil {
		t.Fatal("delete without --force of a backup without manifest succeeded")
	}
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b3.ID}, Force: true}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	if got := restoreBytes(t, s, reps[0].Rewritten[0]); !bytes.Equal(got, want) {
		t.Fatal("the rewritten backup differs after the forced delete")
	}
}

// corruptFirstChunk flips a byte in the payload of the first chunk of the
// volume "vol" in the repository and returns its chunk index.
func corruptFirstChunk(t *testing.T, s *Service) int64 {
	t.Helper()
	var m *chunkstore.Manifest
	var c index.Chunk
	r, _ := s.repoFor(context.Background(), "")
	bs, _ := s.ListBackups(context.Background(), "", false)
	b := mustIndexBackup(t, s, bs[0].ID)
	m, err := s.loadManifest(context.Background(), r, b)
	if err != nil {
		t.Fatal(err)
	}
	g, err := r.store.LoadSegment(context.Background(), b.ID, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	idx := g.First
	for ; idx < g.First+int64(g.Len()); idx++ {
		if _, ok := g.Chunk(idx); ok {
			break
		}
	}
	id, _ := g.Chunk(idx)
	s.cat.View(func(tx *index.Tx) (err error) { c, _, err = tx.Chunk(r.id, id); return err })
	p := filepath.Join(s.cfg.Home, "repository", "packs", c.Pack.String()[:2], c.Pack.String())
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := []byte{0}
	off := int64(c.Offset) + int64(c.Length) - 2
	f.ReadAt(buf, off)
	buf[0] ^= 0xff
	f.WriteAt(buf, off)
	return idx
}

// TestEmptyCatalogNotice: with the catalog lost, backup-list is empty but
// says that the repository holds records and how to get them back.
func TestEmptyCatalogNotice(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	manageImage(t, s, "vol", 1<<20, 111)
	mustBackup(t, s, "vol")
	s = loseCatalog(t, s)
	// (api's list and backup-list pass the notice on: api's TestEmptyCatalogNotice.)
	out, err := s.ListBackups(ctx, "", false)
	if err != nil || len(out) != 0 {
		t.Fatalf("backup-list: %v %v", out, err)
	}
	var notices []string
	s.EmptyCatalogNotice(ctx, func(p Progress) {
		if p.Notice != "" {
			notices = append(notices, p.Notice)
		}
	})
	if len(notices) != 1 || !strings.Contains(notices[0], "catalog-rebuild") || !strings.Contains(notices[0], "1 backup record") {
		t.Errorf("with a lost catalog: notices %q, want one pointing to catalog-rebuild", notices)
	}
}

// TestMountFollowsRepack: images opened by a mount (no lock held) keep
// reading correct bytes after repo-gc moved their chunks, through the
// catalog (this process) and through the owner (a client mount): one open
// across the GC, and one opened after it, whose segments the mount had
// cached located before the GC.
func TestMountFollowsRepack(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	for i, client := range []bool{false, true} {
		vol := fmt.Sprint("vol", i)
		img, data := manageImage(t, s, vol, 4<<20, uint64(121+i))
		old := mustBackup(t, s, vol)
		scribble(t, img, data, 20, 122) // b shares most chunks with old
		b := mustBackup(t, s, vol)
		want := bytes.Clone(data)
		var c Caller = Local{s}
		if client {
			c = clientOnly{Local{s}}
		}
		ms := NewMountSource(c, 1<<20)
		readAll := func(im io.ReaderAt, when string) {
			t.Helper()
			got := make([]byte, len(want))
			if _, err := im.ReadAt(got, 0); err != nil && err != io.EOF {
				t.Fatalf("client=%v: read %s: %v", client, when, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("client=%v: image differs %s", client, when)
			}
		}
		im, err := ms.OpenImage(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		readAll(im, "before repo-gc") // its segments are now located, and cached
		if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{old.ID}}); err != nil {
			t.Fatal(err)
		}
		all := 1.0
		reps, err := s.GC(ctx, GCRequest{Grace: "0", RepackBelow: &all})
		if err != nil {
			t.Fatal(err)
		}
		if reps[0].PacksRepacked == 0 {
			t.Fatalf("client=%v: nothing was repacked (%+v); the test moves nothing", client, reps[0])
		}
		if client {
			// A mount on another host holds no open handle on the packs
			// this GC deleted (nor would one on RADOS): drop the client's
			// cached handles, or it reads the deleted packs through them.
			for _, st := range ms.stores {
				st.Close()
			}
		}
		im2, err := ms.OpenImage(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		readAll(im2, "by an image opened after repo-gc")
		im2.Close()
		readAll(im, "by an image open across repo-gc")
		im.Close()
		ms.Close()
		if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.ID}}); err != nil {
			t.Fatal(err)
		}
	}
}

// clientOnly is a Caller without the in-process shortcut: MountSource then
// reads as a client of another owner does.
type clientOnly struct{ c Caller }

func (c clientOnly) Call(ctx context.Context, verb string, req, resp any, p ProgressFunc) error {
	return c.c.Call(ctx, verb, req, resp, p)
}
func (c clientOnly) Close() error { return nil }

// countingSource calls fn at its at-th ReadAt.
type countingSource struct {
	volume.Source
	mu sync.Mutex
	n  *int
	at int
	fn func()
}

func (c *countingSource) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	*c.n++
	hit := *c.n == c.at
	c.mu.Unlock()
	if hit {
		c.fn()
	}
	return c.Source.ReadAt(p, off)
}

// TestNoDedupAgainstMissingPack: issue 8's item 10. With a pack gone (a
// disk, an operator), the next backup of the same data must not become
// available deduplicated against it: it fails naming the pack, the chunks
// are offered no more, and the backup after stores them again and
// restores; the backup that needed them is marked damaged.
func TestNoDedupAgainstMissingPack(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	_, data := manageImage(t, s, "vol", 2<<20, 131)
	b1 := mustBackup(t, s, "vol")
	for _, p := range packFiles(t, s) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	if err == nil || !strings.Contains(err.Error(), "missing from repository") || !strings.Contains(err.Error(), "backup-create again") {
		t.Fatalf("backup deduplicating against a missing pack: %v", err)
	}
	if v, _ := s.ShowBackup(ctx, b1.ID); !v.Damaged {
		t.Error("the backup whose pack is missing is not marked damaged")
	}
	b3 := mustBackup(t, s, "vol")
	if b3.StoredBytes == 0 {
		t.Fatal("the backup after stored nothing: it deduplicated against the missing chunks")
	}
	if got := restoreBytes(t, s, b3.ID); !bytes.Equal(got, data) {
		t.Fatal("the backup after the missing pack does not restore")
	}
	if got := restoreBytes(t, s, b1.ID); !bytes.Equal(got, data) {
		t.Fatal("the damaged backup does not restore once its chunks are stored again")
	}
}
