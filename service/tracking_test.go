package service

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
	"github.com/volback/volback/pipeline"
)

// diffSource is an image file (or a snapshot of one, image@NAME) that
// tracks changes as the RBD driver does: Changed compares the file with
// its snapshot file in 4 KiB blocks and marks blocks that are now zeros as
// Zero (discarded). It counts the bytes read through ReadAt.
type diffSource struct {
	volume.Source
	path  string
	read  *atomic.Int64
	since *[]string
	fail  bool
}

func (d *diffSource) ReadAt(p []byte, off int64) (int, error) {
	if d.fail {
		return 0, errors.New("read error")
	}
	d.read.Add(int64(len(p)))
	return d.Source.ReadAt(p, off)
}

func (d *diffSource) Changed(_ context.Context, since string) ([]volume.Extent, error) {
	*d.since = append(*d.since, since)
	base, _, _ := strings.Cut(d.path, "@")
	old, err := os.ReadFile(base + "@" + since)
	if errors.Is(err, os.ErrNotExist) {
		return nil, volume.Errorf(volume.ErrNotFound, "snapshot %s of %s does not exist", since, base)
	}
	if err != nil {
		return nil, err
	}
	cur, err := os.ReadFile(d.path)
	if err != nil {
		return nil, err
	}
	const blk = 4096
	var out []volume.Extent
	for off := 0; off < len(cur); off += blk {
		end := min(off+blk, len(cur))
		was := make([]byte, end-off)
		if off < len(old) {
			copy(was, old[off:min(end, len(old))])
		}
		if bytes.Equal(was, cur[off:end]) {
			continue
		}
		e := volume.Extent{Offset: int64(off), Length: int64(end - off), Zero: chunkstore.IsZero(cur[off:end])}
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == e.Offset && out[n-1].Zero == e.Zero {
			out[n-1].Length += e.Length
		} else {
			out = append(out, e)
		}
	}
	return out, nil
}

type tracker struct {
	read  atomic.Int64
	since []string
	fail  bool
}

// track makes s read every volume through a diffSource.
func (tr *tracker) track(s *Service) {
	s.openSource = func(v *index.Volume) (volume.Source, error) {
		f, err := volume.OpenSource(v.Path)
		if err != nil {
			return nil, err
		}
		return &diffSource{Source: f, path: v.Path, read: &tr.read, since: &tr.since, fail: tr.fail}, nil
	}
}

func snapshotsOf(t *testing.T, img string) []string {
	t.Helper()
	m, err := filepath.Glob(img + "@volback.*")
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = strings.TrimPrefix(m[i], img+"@")
	}
	return m
}

// TestChangeTracking: every backup of a change-tracking volume leaves a
// snapshot volback.<id>; an incremental reads only the chunks changed
// since its parent's, discarded chunks become zero unread; the newest
// change_tracking_snapshots are kept; a failed incremental leaves none of
// its own and keeps its base; with the parent's snapshot gone the
// incremental reads everything and says so.
func TestChangeTracking(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	s.cfg.TrackingSnapshots = 2
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 8<<20, 5)
	if _, err := s.Manage(ctx, ManageRequest{Name: "vol", Source: img}); err != nil {
		t.Fatal(err)
	}
	tr := &tracker{}
	tr.track(s)
	backup := func(incremental bool) *BackupView {
		t.Helper()
		tr.read.Store(0)
		b, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: incremental}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := restoreBytes(t, s, b.ID); !bytes.Equal(got, data) {
			t.Fatalf("backup %s does not restore the volume as it was", b.ID)
		}
		return b
	}

	b1 := backup(false)
	if got, want := snapshotsOf(t, img), []string{"volback." + b1.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshots after a full backup: %v, want %v", got, want)
	}

	copy(data[100_000:], bytes.Repeat([]byte{7}, 5000)) // inside chunk 1
	clear(data[3<<20 : 3<<20+128<<10])                  // chunks 48 and 49 discarded
	writeFile(t, img, data)
	b2 := backup(true)
	if want := []string{"volback." + b1.ID}; !reflect.DeepEqual(tr.since, want) {
		t.Errorf("asked for changes since %v, want %v", tr.since, want)
	}
	if got := tr.read.Load(); got != 64<<10 {
		t.Errorf("incremental read %d bytes, want only the changed chunk (65536): discarded chunks need no read", got)
	}
	if !strings.Contains(deref(b2.ChangeTracking), "read only the changes since snapshot volback."+b1.ID) {
		t.Errorf("change_tracking of the incremental: %q", deref(b2.ChangeTracking))
	}

	copy(data[5<<20:], bytes.Repeat([]byte{9}, 70_000))
	writeFile(t, img, data)
	b3 := backup(true)
	want := []string{"volback." + b2.ID, "volback." + b3.ID}
	got := snapshotsOf(t, img)
	if len(got) != 2 || !(reflect.DeepEqual(got, want) || reflect.DeepEqual(got, []string{want[1], want[0]})) {
		t.Fatalf("snapshots kept with change_tracking_snapshots = 2: %v, want %v", got, want)
	}

	copy(data[7<<20:], bytes.Repeat([]byte{4}, 100))
	writeFile(t, img, data)
	tr.fail = true
	tr.track(s)
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil); err == nil {
		t.Fatal("a backup whose reads fail succeeded")
	}
	// It pruned while it read (pruneAhead): of the older snapshots only
	// its base, b3's, is left; none of its own.
	if got, want := snapshotsOf(t, img), []string{"volback." + b3.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshots after a failed incremental: %v, want its base only %v", got, want)
	}
	tr.fail = false
	tr.track(s)

	// The parent's snapshot is gone: a full read, recorded and shown.
	if err := volume.DeleteSnapshot(img, "volback."+b3.ID); err != nil {
		t.Fatal(err)
	}
	b4 := backup(true)
	snaps, err := s.ListSnapshots(ctx, "vol", false)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, sn := range snaps {
		kept[deref(sn.BackupID)] = true
	}
	if len(snaps) != 2 || !kept[b4.ID] || !kept[b3.ID] {
		t.Errorf("snapshot-list after retention: %+v; want the records of the 2 newest backups' snapshots (%s, %s)", snaps, b3.ID, b4.ID)
	}
	if got := tr.read.Load(); got < 6<<20 {
		t.Errorf("incremental without its parent's snapshot read %d bytes, want the whole allocated volume", got)
	}
	shown, err := s.ShowBackup(ctx, b4.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c := deref(shown.ChangeTracking); !strings.Contains(c, "full read") || !strings.Contains(c, "volback."+b3.ID) || !strings.Contains(c, "no longer exists") {
		t.Errorf("backup-show of the fallback: change_tracking %q, want the full read and the missing snapshot", c)
	}
	if shown, _ := s.ShowBackup(ctx, b1.ID); shown.ChangeTracking != nil {
		t.Errorf("a full backup shows change_tracking %q", *shown.ChangeTracking)
	}
	mustCheck(t, s)

	// Deleting the volume takes its change-tracking snapshots along.
	if _, err := s.DeleteVolume(ctx, "vol"); err != nil {
		t.Fatalf("delete a volume with only change-tracking snapshots: %v", err)
	}
	if got := snapshotsOf(t, img); len(got) != 0 {
		t.Errorf("snapshots left after deleting the volume: %v", got)
	}
	if snaps, _ := s.ListSnapshots(ctx, "", true); len(snaps) != 0 {
		t.Errorf("snapshot records left after deleting the volume: %+v", snaps)
	}
}

func TestChangedChunksZeroAndEdges(t *testing.T) {
	const cs = 64 << 10
	size := int64(10*cs + 512) // a short last chunk (10)
	changed := []volume.Extent{
		{Offset: 100, Length: 10},                        // chunk 0
		{Offset: 2*cs - 100, Length: 3*cs + 200},         // discarded: 1 and 5 partly (read), 2-4 whole (zero)
		{Offset: 4 * cs, Length: 1, Zero: false},         // but chunk 4 also has data: read
		{Offset: 9*cs + 5, Length: cs + 507, Zero: true}, // 9 partly, 10 (short, to the end) whole
	}
	changed[1].Zero = true
	read, zero := changedChunks(changed, size, size, cs)
	if want := []pipeline.Range{{First: 0, End: 2}, {First: 4, End: 6}, {First: 9, End: 11}}; !reflect.DeepEqual(read, want) {
		t.Errorf("read %v, want %v", read, want)
	}
	if want := []pipeline.Range{{First: 2, End: 4}}; !reflect.DeepEqual(zero, want) {
		t.Errorf("zero %v, want %v", zero, want)
	}
	// Growth: every chunk past the parent's last whole one is read.
	read, zero = changedChunks(nil, 4*cs+7, 6*cs, cs)
	if want := []pipeline.Range{{First: 4, End: 6}}; !reflect.DeepEqual(read, want) || len(zero) != 0 {
		t.Errorf("after growth: read %v zero %v, want %v and none", read, zero, want)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
