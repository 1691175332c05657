package service

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
)

// TestRepackKeepsLiveChunks is issue 8's reproduction: a repack after a
// delete must not let the orphan pass delete the packs it just wrote.
func TestRepackKeepsLiveChunks(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "img1")
	data := writeImage(t, img, 4<<20, 1)
	if _, err := s.Manage(ctx, ManageRequest{Name: "v1", Source: img}); err != nil {
		t.Fatal(err)
	}
	b1, err := s.CreateBackup(ctx, BackupRequest{Volume: "v1", Name: "b1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data2 := bytes.Clone(data)
	copy(data2, writeImage(t, filepath.Join(t.TempDir(), "new"), 3<<20, 2)) // dd 3 MiB of new data
	writeFile(t, img, data2)
	b2, err := s.CreateBackup(ctx, BackupRequest{Volume: "v1", Name: "b2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b1.ID}}); err != nil {
		t.Fatal(err)
	}
	reps, err := s.GC(ctx, GCRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", reps)
	mustCheck(t, s)
	if got := restoreBytes(t, s, b2.ID); !bytes.Equal(got, data2) {
		t.Fatal("b2 does not restore byte-exact after repo-gc")
	}
}
