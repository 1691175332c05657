package service

import (
	"bytes"
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// trackingSource is a file source that also reports changed extents, as
// the RBD driver does from its diff; it counts the bytes read.
type trackingSource struct {
	volume.Source
	changed []volume.Extent
	since   string
	read    atomic.Int64
}

func (t *trackingSource) ReadAt(p []byte, off int64) (int, error) {
	t.read.Add(int64(len(p)))
	return t.Source.ReadAt(p, off)
}

func (t *trackingSource) Changed(_ context.Context, snap string) ([]volume.Extent, error) {
	t.since = snap
	return t.changed, nil
}

func TestIncrementalReadsOnlyTrackedChanges(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 8<<20, 5)
	s.Manage(ctx, ManageRequest{Name: "vol", Source: img})
	full, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The full backup was taken of a snapshot the driver knows as "snap-1":
	// the backup records the catalog's snapshot id, which plan maps back.
	s.update(func(tx *index.Tx) error {
		b, _ := tx.Backup(full.ID)
		b.SnapshotID = "3f0c1e9a-snapshot"
		if err := tx.PutSnapshot(&index.Snapshot{ID: b.SnapshotID, VolumeID: b.VolumeID, Status: index.StatusAvailable,
			DriverName: "snap-1", ProjectID: b.ProjectID}); err != nil {
			return err
		}
		return tx.PutBackup(b)
	})

	copy(data[100_000:], bytes.Repeat([]byte{7}, 5000)) // inside chunk 1
	clear(data[3<<20 : 3<<20+64<<10])                   // chunk 48 becomes zeros
	writeFile(t, img, data)
	var src *trackingSource
	s.openSource = func(v *index.Volume) (volume.Source, error) {
		f, err := volume.OpenSource(v.Path)
		src = &trackingSource{Source: f, changed: []volume.Extent{{Offset: 100_000, Length: 5000}, {Offset: 3 << 20, Length: 64 << 10}}}
		return src, err
	}
	inc, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if src.since != "snap-1" {
		t.Errorf("asked for changes since %q, want the driver's name of the parent's snapshot, snap-1", src.since)
	}
	if got := src.read.Load(); got != 2*64<<10 {
		t.Errorf("incremental read %d bytes, want exactly the 2 changed chunks (%d)", got, 2*64<<10)
	}
	if got := restoreBytes(t, s, inc.ID); !bytes.Equal(got, data) {
		t.Fatal("restore of the change-tracked incremental differs from the volume")
	}
	mustCheck(t, s)
}
