package service

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/volback/volback/index"
)

func TestRebuildCatalog(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s)

	// Two more volumes whose backups will be damaged: one loses its
	// manifest, one its pack.
	var broken []string
	for i, name := range []string{"nomanifest", "nopack"} {
		img := filepath.Join(t.TempDir(), name+".img")
		writeImage(t, img, 1<<20, uint64(100+i))
		if _, err := s.Manage(ctx, ManageRequest{Name: name, Source: img}); err != nil {
			t.Fatal(err)
		}
		packsBefore := packFiles(t, s)
		b, err := s.CreateBackup(ctx, BackupRequest{Volume: name}, nil)
		if err != nil {
			t.Fatal(err)
		}
		broken = append(broken, b.ID)
		if name == "nopack" {
			for _, p := range packFiles(t, s) {
				if !slices.Contains(packsBefore, p) {
					if err := os.Rename(p, p+".away"); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	if err := os.Rename(filepath.Join(s.cfg.Home, "repository", "manifests", broken[0]), filepath.Join(t.TempDir(), "m")); err != nil {
		t.Fatal(err)
	}
	before := backupsOf(t, s)
	var vols []*index.Volume
	s.cat.View(func(tx *index.Tx) (err error) { vols, err = tx.Volumes(); return err })

	s = loseCatalog(t, s)
	rep, err := s.RebuildCatalog(ctx, RebuildRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	if rep.Backups != 5 || rep.BackupsImported != 3 || rep.VolumesCreated != 1 || rep.Packs == 0 || rep.Chunks == 0 {
		t.Errorf("report %+v: want 5 records, 3 imported, 1 volume", rep)
	}
	noManifest := broken[0]
	slices.Sort(broken)
	slices.Sort(rep.Skipped)
	if !slices.Equal(rep.Skipped, broken) {
		t.Errorf("skipped %v, want %v", rep.Skipped, broken)
	}
	all := strings.Join(rep.Problems, "\n")
	for _, w := range []string{broken[0] + " skipped", "manifest", broken[1] + " skipped", "in no readable pack"} {
		if !strings.Contains(all, w) {
			t.Errorf("problems do not mention %q:\n%s", w, all)
		}
	}
	after := backupsOf(t, s)
	if len(after) != 3 {
		t.Fatalf("%d backups after rebuild, want 3", len(after))
	}
	for _, id := range c.ids {
		a, b := after[id], before[id]
		a.UpdatedAt = b.UpdatedAt
		if !equalJSON(a, b) {
			t.Errorf("backup %s after rebuild:\n%+v\nwant\n%+v", id, a, b)
		}
	}
	v, err := s.ShowVolume(ctx, before[c.ids[0]].VolumeID)
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != "vol" || v.Path != "" || v.SizeBytes != vols[0].Size {
		t.Errorf("placeholder volume %+v", v)
	}
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: v.ID}, nil); err == nil || !strings.Contains(err.Error(), "manage the source again") {
		t.Errorf("backup of a placeholder volume: %v", err)
	}
	for i, id := range c.ids {
		if got := restoreBytes(t, s, id); !bytes.Equal(got, c.states[i]) {
			t.Fatalf("restore of rebuilt backup %d differs", i)
		}
	}
	// The record without a manifest stays a problem (repo-gc cannot judge
	// its chunks) until it is removed by force.
	reps, err := s.Check(ctx, CheckRequest{})
	if err != nil || len(reps[0].Problems) != 1 || !strings.Contains(reps[0].Problems[0], noManifest) {
		t.Fatalf("check with a record that has no manifest: %v %+v", err, reps)
	}
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{noManifest}}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("delete of a record the catalog does not know, without --force: %v", err)
	}
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{noManifest}, Force: true}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)

	if _, err := s.RebuildCatalog(ctx, RebuildRequest{}); err == nil || !strings.Contains(err.Error(), "already has 3 backup(s)") {
		t.Fatalf("rebuild into a non-empty catalog: %v", err)
	}
	if _, err := s.RebuildCatalog(ctx, RebuildRequest{Repository: "file:///nowhere"}); err == nil || !strings.Contains(err.Error(), "already has") {
		t.Fatalf("rebuild into a non-empty catalog: %v", err)
	}
}

func TestRebuildUnknownRepository(t *testing.T) {
	s := newService(t)
	_, err := s.RebuildCatalog(context.Background(), RebuildRequest{Repository: "file:///nowhere"})
	if err == nil || !strings.Contains(err.Error(), "not configured in any zone") {
		t.Fatalf("rebuild from an unconfigured repository: %v", err)
	}
}

// packFiles lists the pack files of the default repository.
func packFiles(t *testing.T, s *Service) []string {
	t.Helper()
	var out []string
	filepath.Walk(filepath.Join(s.cfg.Home, "repository", "packs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	return out
}
