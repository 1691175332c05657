package service

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/index"
	"golang.org/x/sys/unix"
)

// TestSnapshotVerbs: create, list, show, delete with Cinder's fields; the
// driver's file appears and goes; a volume with snapshots cannot be
// deleted.
func TestSnapshotVerbs(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "a.img")
	want := writeImage(t, img, 2<<20, 3)
	v, err := s.Manage(ctx, ManageRequest{Name: "a", Source: img})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := s.CreateSnapshot(ctx, SnapshotRequest{Volume: "a", Name: "s1", Description: "before upgrade"})
	if err != nil {
		t.Fatal(err)
	}
	if sn.Status != "available" || sn.VolumeID != v.ID || sn.SizeBytes != 2<<20 || (sn.Method != "reflink" && sn.Method != "sparse-copy") {
		t.Errorf("snapshot %+v", sn)
	}
	var rec *index.Snapshot
	s.cat.View(func(tx *index.Tx) (err error) { rec, err = tx.Snapshot(sn.ID); return err })
	if got, err := os.ReadFile(rec.Locator); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the snapshot's file %s does not hold the volume's bytes (%v)", rec.Locator, err)
	}
	if l, _ := s.ListSnapshots(ctx, "a", false); len(l) != 1 || l[0].ID != sn.ID {
		t.Errorf("snapshot-list --volume-id a: %+v", l)
	}
	if got, err := s.ShowSnapshot(ctx, "s1"); err != nil || got.ID != sn.ID {
		t.Errorf("snapshot-show s1: %+v %v", got, err)
	}
	if _, err := s.ShowSnapshot(as("other", RoleMember), sn.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("another project's snapshot-show: %v, want not found", err)
	}
	if _, err := s.DeleteVolume(ctx, "a"); !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), "dependent snapshots") {
		t.Errorf("deleting a volume with a snapshot: %v", err)
	}
	if _, err := s.DeleteSnapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rec.Locator); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot file %s still there after snapshot-delete: %v", rec.Locator, err)
	}
	if l, _ := s.ListSnapshots(ctx, "", false); len(l) != 0 {
		t.Errorf("snapshots left: %+v", l)
	}
}

// TestBackupOfSnapshot: --snapshot-id backs up the snapshot, not the
// volume as it is now, records snapshot_id, and the restore equals the
// snapshot.
func TestBackupOfSnapshot(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "a.img")
	then := writeImage(t, img, 2<<20, 3)
	s.Manage(ctx, ManageRequest{Name: "a", Source: img})
	sn, err := s.CreateSnapshot(ctx, SnapshotRequest{Volume: "a"})
	if err != nil {
		t.Fatal(err)
	}
	writeImage(t, img, 2<<20, 4) // the volume moves on
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "a", SnapshotID: sn.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.SnapshotID == nil || *b.SnapshotID != sn.ID || b.Consistency == nil || *b.Consistency != ConsistencyCrash {
		t.Errorf("backup of a snapshot: snapshot_id %v, consistency %v", b.SnapshotID, b.Consistency)
	}
	if got := restoreBytes(t, s, b.ID); !bytes.Equal(got, then) {
		t.Error("the backup of the snapshot does not restore to the snapshot's bytes")
	}
	if got, _ := s.ShowSnapshot(ctx, sn.ID); got.Status != "available" {
		t.Errorf("snapshot is %s after its backup, want available", got.Status)
	}
	if v, _ := s.ShowVolume(ctx, "a"); v.Status != "available" {
		t.Errorf("volume is %s after the backup of its snapshot", v.Status)
	}
	other := filepath.Join(t.TempDir(), "b.img")
	writeImage(t, other, 1<<20, 5)
	s.Manage(ctx, ManageRequest{Name: "b", Source: other})
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "b", SnapshotID: sn.ID}, nil); !errors.Is(err, ErrUsage) {
		t.Errorf("backup of volume b with a snapshot of a: %v, want refused", err)
	}
}

// writeLock takes an OFD write lock on path, as QEMU does on the images
// it runs, so the file driver reports the image in use.
func writeLock(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
}

// TestInUseBackup: a volume in use is refused without --force (Cinder's
// hint, nothing written); --force backs it up through a snapshot it then
// deletes; --allow-inconsistent reads it live and says so.
func TestInUseBackup(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	want := writeImage(t, img, 2<<20, 3)
	s.Manage(ctx, ManageRequest{Name: "a", Source: img})
	writeLock(t, img)
	if v, _ := s.ShowVolume(ctx, "a"); v.Status != index.StatusInUse {
		t.Errorf("a write-locked image shows %s, want in-use", v.Status)
	}

	before := catalogState(t, s)
	_, err := s.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil)
	if !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), "Backing up an in-use volume must use the force flag") ||
		!strings.Contains(err.Error(), "write-locked") {
		t.Fatalf("backup of a locked image: %v", err)
	}
	if catalogState(t, s) != before {
		t.Error("the refusal changed the catalog")
	}
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "a", Force: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Consistency == nil || *b.Consistency != ConsistencyCrash || !strings.Contains(*b.ConsistencyDetail, "deleted after") {
		t.Errorf("--force backup: consistency %v / %v", b.Consistency, b.ConsistencyDetail)
	}
	if got := restoreBytes(t, s, b.ID); !bytes.Equal(got, want) {
		t.Error("the --force backup does not restore to the volume's bytes")
	}
	left, _ := filepath.Glob(img + "@*")
	if l, _ := s.ListSnapshots(ctx, "", true); len(l) != 0 || len(left) != 0 {
		t.Errorf("the backup's snapshot is left: records %+v, files %v", l, left)
	}
	b2, err := s.CreateBackup(ctx, BackupRequest{Volume: "a", AllowInconsistent: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b2.Consistency == nil || *b2.Consistency != ConsistencyLiveInUse {
		t.Errorf("--allow-inconsistent backup: consistency %v", b2.Consistency)
	}
	if sn, err := s.CreateSnapshot(ctx, SnapshotRequest{Volume: "a"}); !errors.Is(err, ErrInvalidState) {
		t.Errorf("snapshot of an in-use volume without --force: %+v %v", sn, err)
	}
}
