package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// setVolumeStatus sets a volume's status in the catalog, as a running job
// or a failure would.
func setVolumeStatus(t *testing.T, s *Service, id, status string) {
	t.Helper()
	err := s.update(func(tx *index.Tx) error {
		v, err := tx.Volume(id)
		if err != nil {
			return err
		}
		v.Status = status
		return tx.PutVolume(v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotRefusesBusyVolume: snapshot-create of a volume a job holds
// (being restored into or backed up) or in an error status is refused,
// naming the status and what to do, with or without --force, and leaves
// no snapshot behind; backup-create refuses the same way (one check).
func TestSnapshotRefusesBusyVolume(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "a.img")
	writeImage(t, img, 1<<20, 5)
	v, err := s.Manage(ctx, ManageRequest{Name: "a", Source: img})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ status, want string }{
		{index.StatusRestoringBackup, "wait for the running job to finish"},
		{index.StatusBackingUp, "wait for the running job to finish"},
		{index.StatusError, "manage the source again"},
		{index.StatusErrorRestoring, "restore a backup into it again"},
	} {
		setVolumeStatus(t, s, v.ID, c.status)
		for _, force := range []bool{false, true} {
			_, err := s.CreateSnapshot(ctx, SnapshotRequest{Volume: "a", Force: force})
			if !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), c.status) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("snapshot-create (force %v) of a volume in %s: %v, want refused naming the status and %q", force, c.status, err, c.want)
			}
		}
		if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "a", Force: true}, nil); !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("backup-create of a volume in %s: %v, want refused with %q", c.status, err, c.want)
		}
		if l, _ := s.ListSnapshots(ctx, "", false); len(l) != 0 {
			t.Fatalf("refused snapshot-create of a volume in %s left snapshots %+v", c.status, l)
		}
		if got, _ := s.ShowVolume(ctx, v.ID); got.Status != c.status {
			t.Errorf("refusals changed the volume's status %s to %s", c.status, got.Status)
		}
	}
	setVolumeStatus(t, s, v.ID, index.StatusAvailable)
	if _, err := s.CreateSnapshot(ctx, SnapshotRequest{Volume: "a"}); err != nil {
		t.Errorf("snapshot-create once available again: %v", err)
	}
}

// TestSnapshotCreateRacesVolumeDelete: snapshot-create and volume-delete
// of one volume, started together many times: exactly one goes through.
// Either the snapshot exists and the delete was refused for it, or the
// volume is gone and the snapshot was refused, leaving no record and no
// driver snapshot behind.
func TestSnapshotCreateRacesVolumeDelete(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	dir := t.TempDir()
	snapped, deleted := 0, 0
	for i := range 20 {
		name := fmt.Sprintf("v%d", i)
		img := filepath.Join(dir, name+".img")
		writeImage(t, img, 256<<10, uint64(i))
		v, err := s.Manage(ctx, ManageRequest{Name: name, Source: img})
		if err != nil {
			t.Fatal(err)
		}
		var snapErr, delErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, snapErr = s.CreateSnapshot(ctx, SnapshotRequest{Volume: v.ID}) }()
		go func() { defer wg.Done(); _, delErr = s.DeleteVolume(ctx, v.ID) }()
		wg.Wait()
		snaps, _ := s.ListSnapshots(ctx, "", false)
		mine := 0
		for _, sn := range snaps {
			if sn.VolumeID == v.ID {
				mine++
			}
		}
		switch {
		case snapErr == nil && errors.Is(delErr, ErrInvalidState):
			snapped++
			if _, err := s.ShowVolume(ctx, v.ID); err != nil || mine != 1 {
				t.Fatalf("round %d: snapshot won, but volume: %v, its snapshots: %d", i, err, mine)
			}
		case delErr == nil && snapErr != nil && errors.Is(snapErr, ErrNotFound):
			deleted++
			if mine != 0 {
				t.Fatalf("round %d: the volume was deleted, yet %d snapshots of it are in the catalog", i, mine)
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, name+".img*snapshot-*")); len(leftovers) != 0 {
				t.Fatalf("round %d: driver snapshots left behind: %v", i, leftovers)
			}
		default:
			t.Fatalf("round %d: snapshot-create %v, volume-delete %v; want exactly one to go through", i, snapErr, delErr)
		}
	}
	t.Logf("snapshot first %d times, delete first %d times", snapped, deleted)
}
