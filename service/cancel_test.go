package service

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// slowSource is the real file source, read at a bounded pace, so a test
// can act while a backup is mid-way.
type slowSource struct {
	volume.Source
	read atomic.Int64
}

func (s *slowSource) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(10 * time.Millisecond)
	s.read.Add(int64(len(p)))
	return s.Source.ReadAt(p, off)
}

// TestCancelBackup: backup-delete --force of a backup mid-way stops it
// within seconds; the record is gone, no chunk reference remains, the
// volume's status is back, and after repo-gc no pack is left.
func TestCancelBackup(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "a.img")
	writeImage(t, img, 64<<20, 9)
	s.Manage(ctx, ManageRequest{Name: "a", Source: img})
	var opened atomic.Pointer[slowSource]
	s.openSource = func(v *index.Volume) (volume.Source, error) {
		f, err := volume.OpenSource(v.Path)
		src := &slowSource{Source: f}
		opened.Store(src)
		return src, err
	}
	done := make(chan error, 1)
	go func() { _, err := s.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil); done <- err }()
	var id string
	for id == "" || opened.Load() == nil || opened.Load().read.Load() < 8<<20 {
		time.Sleep(10 * time.Millisecond)
		bs, _ := s.ListBackups(ctx, "", false)
		if len(bs) == 1 {
			id = bs[0].ID
		}
	}
	if v, _ := s.ShowVolume(ctx, "a"); v.Status != index.StatusBackingUp {
		t.Fatalf("volume is %s during its backup", v.Status)
	}
	if _, err := s.DeleteBackups(as("admin", RoleMember), DeleteRequest{Refs: []string{id}, Force: true}); !errors.Is(err, ErrForbidden) {
		t.Errorf("force delete by a member: %v, want forbidden", err)
	}
	start := time.Now()
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{id}, Force: true}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "cancelled by backup-delete --force") {
		t.Fatalf("the cancelled backup returned %v", err)
	}
	if took > 2*time.Second {
		t.Errorf("cancel took %v, want within 2 s", took)
	}
	if read := opened.Load().read.Load(); read >= 64<<20 {
		t.Errorf("the backup read the whole volume (%d bytes) before stopping", read)
	}
	if bs, _ := s.ListBackups(ctx, "", true); len(bs) != 0 {
		t.Errorf("backups left: %+v", bs)
	}
	if v, _ := s.ShowVolume(ctx, "a"); v.Status != index.StatusAvailable {
		t.Errorf("volume is %s after the cancel, want available", v.Status)
	}
	refs := 0
	s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(s.repoID(t), func(_ chunkstore.ID, c index.Chunk) error { refs += int(c.Refs); return nil })
	})
	if refs != 0 {
		t.Errorf("%d chunk references left after the cancel", refs)
	}
	if _, err := s.GC(ctx, GCRequest{}); err != nil {
		t.Fatal(err)
	}
	if n := packCount(t, s); n != 0 {
		t.Errorf("%d packs left after repo-gc; no backup needs any", n)
	}
	mustCheck(t, s)
}

// TestCancelRestore: backup-reset-state of a restoring backup stops the
// restore; the volume ends available marked incomplete, the backup is
// available and restores whole again (which clears the mark).
func TestCancelRestore(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	want := writeImage(t, img, 64<<20, 9)
	s.Manage(ctx, ManageRequest{Name: "a", Source: img})
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "t.img")
	if err := os.WriteFile(dst, make([]byte, 64<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	tv, err := s.Manage(ctx, ManageRequest{Name: "t", Source: dst})
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.Workers = 1
	restoreDelay = 20 * time.Millisecond
	t.Cleanup(func() { restoreDelay = 0 })
	done := make(chan error, 1)
	go func() { _, err := s.Restore(ctx, RestoreRequest{Backup: b.ID, Volume: "t"}, nil); done <- err }()
	for {
		if bv, _ := s.ShowBackup(ctx, b.ID); bv.Status == index.StatusRestoring {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := s.ResetBackupState(as("admin", RoleMember), ResetStateRequest{Ref: b.ID, State: "available"}); !errors.Is(err, ErrForbidden) {
		t.Errorf("reset-state by a member: %v, want forbidden", err)
	}
	start := time.Now()
	bv, err := s.ResetBackupState(ctx, ResetStateRequest{Ref: b.ID, State: "available"})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 2*time.Second || bv.Status != "available" {
		t.Errorf("reset-state took %v and left the backup %s", time.Since(start), bv.Status)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "cancelled") {
		t.Errorf("the cancelled restore returned %v", err)
	}
	v, _ := s.ShowVolume(ctx, tv.ID)
	if v.Status != "available" || v.IncompleteContent == nil {
		t.Errorf("volume after the cancelled restore: %s, incomplete %v; want available and marked", v.Status, v.IncompleteContent)
	}
	restoreDelay = 0
	if _, err := s.Restore(ctx, RestoreRequest{Backup: b.ID, Volume: "t"}, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, want) {
		t.Error("the restore after the cancel differs from the backup")
	}
	if v, _ := s.ShowVolume(ctx, tv.ID); v.IncompleteContent != nil {
		t.Errorf("a whole restore left the mark %q", *v.IncompleteContent)
	}
}
