//go:build ceph

package rbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/drivers/volume/volumetest"
	"github.com/volback/volback/integration/ceph"
)

const MiB = 1 << 20

var ctx = context.Background()

func write(t *testing.T, loc string, pieces map[int64][]byte) {
	t.Helper()
	tg, err := Driver{}.OpenTarget(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	for off, p := range pieces {
		if _, err := tg.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
}

func changed(t *testing.T, loc, since string) []volume.Extent {
	t.Helper()
	src, err := Driver{}.OpenSource(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exts, err := src.(volume.ChangeTracker).Changed(ctx, since)
	if err != nil {
		t.Fatalf("Changed since %s: %v", since, err)
	}
	return exts
}

// TestChangedExtents pins down what the diff reports between two
// snapshots: an overwrite inside an object that existed is exact; an
// object created since is reported from its start to the end of what was
// written (at most the whole object); a discarded object is a Zero extent.
func TestChangedExtents(t *testing.T) {
	e := ceph.Cluster(t)
	const obj = 4 * MiB
	loc := newImage(t, e, 8*obj, 22)
	write(t, loc, map[int64][]byte{0: volumetest.Random(t, 4*obj)}) // objects 0-3 exist
	if _, err := (Driver{}).Snapshot(ctx, loc, "base"); err != nil {
		t.Fatal(err)
	}
	overwrite := volume.Extent{Offset: MiB + 100, Length: 64 << 10}
	created := volume.Extent{Offset: 5*obj + 2*MiB, Length: 64 << 10}
	write(t, loc, map[int64][]byte{
		overwrite.Offset: volumetest.Random(t, int(overwrite.Length)),
		created.Offset:   volumetest.Random(t, int(created.Length)),
	})
	tg, err := Driver{}.OpenTarget(loc)
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.Zero(2*obj, obj); err != nil {
		t.Fatal(err)
	}
	tg.Close()
	snap, err := Driver{}.Snapshot(ctx, loc, "next")
	if err != nil {
		t.Fatal(err)
	}
	exts := changed(t, snap.Locator, "base")
	t.Logf("changed: %+v", exts)
	if len(exts) != 3 {
		t.Fatalf("Changed = %+v; want the overwrite, the discarded object and the new object", exts)
	}
	if exts[0] != overwrite {
		t.Errorf("overwrite inside an existing object reported as %+v, want exactly %+v", exts[0], overwrite)
	}
	if want := (volume.Extent{Offset: 2 * obj, Length: obj, Zero: true}); exts[1] != want {
		t.Errorf("discarded object reported as %+v, want %+v", exts[1], want)
	}
	if n := exts[2]; n.Zero || n.Offset < 5*obj || n.Offset > created.Offset || n.Offset+n.Length < created.Offset+created.Length || n.Offset+n.Length > 6*obj {
		t.Errorf("new object reported as %+v; want data covering %+v inside object 5", n, created)
	}
	// The image now (not a snapshot) has the same changes since base.
	if now := changed(t, loc, "base"); len(now) != len(exts) {
		t.Errorf("Changed of the image itself since base = %+v, want %+v", now, exts)
	}
	src, _ := Driver{}.OpenSource(snap.Locator)
	defer src.Close()
	if _, err := src.(volume.ChangeTracker).Changed(ctx, "gone"); !errors.Is(err, volume.ErrNotFound) || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Changed since a missing snapshot: %v, want ErrNotFound naming it", err)
	}
}

// TestOwnWatchIsNotInUse: this process's own open target does not make the
// image in use (its watch is ours), another client's does.
func TestOwnWatchIsNotInUse(t *testing.T) {
	e := ceph.Cluster(t)
	loc := newImage(t, e, 16*MiB, 22)
	tg, err := Driver{}.OpenTarget(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if u, err := (Driver{}).InUse(loc); err != nil || u.InUse {
		t.Fatalf("InUse with only our own target open: %+v, %v", u, err)
	}
	who, release := holdOpen(t, e, loc)
	defer release()
	if u, err := (Driver{}).InUse(loc); err != nil || !u.InUse || !strings.Contains(u.Reason, who) || strings.Count(u.Reason, "client.") != 1 {
		t.Fatalf("InUse with %s holding it too: %+v, %v; want in use naming only %s", who, u, err, who)
	}
}

// TestSnapshotIsReadOnly: a snapshot opens as a source, never as a target,
// and Delete of an image removes volback's own snapshots but refuses to
// remove others'.
func TestSnapshotIsReadOnly(t *testing.T) {
	e := ceph.Cluster(t)
	loc := newImage(t, e, 16*MiB, 22)
	data := volumetest.Random(t, MiB)
	write(t, loc, map[int64][]byte{0: data})
	d := Driver{}
	own, err := d.Snapshot(ctx, loc, OwnSnapshotPrefix+"b1")
	if err != nil {
		t.Fatal(err)
	}
	if tg, err := d.OpenTarget(own.Locator); err == nil {
		tg.Close()
		t.Fatal("OpenTarget of a snapshot succeeded")
	}
	info, err := d.Stat(own.Locator)
	if err != nil || info.Locator != own.Locator || info.Size != 16*MiB {
		t.Fatalf("Stat of the snapshot: %+v, %v", info, err)
	}
	if _, err := d.Snapshot(ctx, loc, "user-snap"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(loc); err == nil || !strings.Contains(err.Error(), "user-snap") {
		t.Fatalf("Delete of an image with a snapshot volback does not own: %v, want a refusal naming it", err)
	}
	src, err := d.OpenSource(own.Locator)
	if err != nil {
		t.Fatalf("a refused Delete removed volback's snapshot: %v", err)
	}
	got := make([]byte, MiB)
	if _, err := src.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("snapshot read: %v or wrong bytes", err)
	}
	src.Close()
	if err := d.DeleteSnapshot(loc, "user-snap"); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(loc); err != nil {
		t.Fatalf("Delete with only volback's snapshots left: %v", err)
	}
	if _, err := d.Stat(loc); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v", err)
	}
}

// TestMissingPool names the pool and how to make it.
func TestMissingPool(t *testing.T) {
	e := ceph.Cluster(t)
	loc := strings.Replace(locatorOf(e, "img"), "rbd://"+e.RBDPool+"/", "rbd://no-such-pool/", 1)
	_, err := Driver{}.Stat(loc)
	if !errors.Is(err, volume.ErrNotFound) || !strings.Contains(err.Error(), "no pool no-such-pool") {
		t.Fatalf("Stat in a missing pool: %v", err)
	}
}

// osdWrites is the OSDs' count of write operations so far.
func osdWrites(t *testing.T, e ceph.Env) int64 {
	t.Helper()
	out, err := exec.Command("ceph", "--conf", e.Conf, "--id", e.User, "tell", "osd.*", "perf", "dump", "-f", "json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var d struct {
			OSD struct {
				W int64 `json:"op_w"`
			} `json:"osd"`
		}
		if err := dec.Decode(&d); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		total += d.OSD.W
	}
	return total
}

// TestTargetGathersChunks: 64 KiB writes from several goroutines reach
// the OSD as a few segment-sized writes, partly written segments beyond
// the pending limit and at Sync are written as they are, and the image
// reads back as written.
func TestTargetGathersChunks(t *testing.T) {
	e := ceph.Cluster(t)
	const size = 48 * MiB
	loc := newImage(t, e, size, 22)
	data := volumetest.Random(t, size)
	tg, err := Driver{}.OpenTarget(loc)
	if err != nil {
		t.Fatal(err)
	}
	write := func(chunks []int64) {
		var wg sync.WaitGroup
		next := atomic.Int64{}
		for range 8 {
			wg.Go(func() {
				for k := next.Add(1) - 1; k < int64(len(chunks)); k = next.Add(1) - 1 {
					off := chunks[k] * 64 << 10
					if _, err := tg.WriteAt(data[off:off+64<<10], off); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
	}
	before := osdWrites(t, e)
	var whole []int64 // the first 8 MiB, every chunk
	for i := range int64(128) {
		whole = append(whole, i)
	}
	write(whole)
	if n := osdWrites(t, e) - before; n > 24 {
		t.Errorf("8 MiB in 64 KiB writes took %d OSD writes; gathered into 1 MiB segments it takes about 8 (plus object-map updates)", n)
	}
	var every []int64 // every other chunk of the next 32 MiB: 32 partial segments
	for i := int64(128); i < 128+512; i += 2 {
		every = append(every, i)
	}
	write(every)
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := tg.Zero(MiB+100, 1000); err != nil { // inside a written segment
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want, data[:8*MiB])
	for _, i := range every {
		off := i * 64 << 10
		copy(want[off:off+64<<10], data[off:off+64<<10])
	}
	clear(want[MiB+100 : MiB+1100])
	src, err := Driver{}.OpenSource(loc)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := make([]byte, size)
	if _, err := src.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the image does not read as what was written through the gathering target")
	}
}

// TestAvailableWithCeph: a Ceph build's driver is available (service-list
// shows it up; a cluster's health is another matter).
func TestAvailableWithCeph(t *testing.T) {
	if err := volume.Available(Scheme); err != nil {
		t.Fatalf("volume.Available(%q) in a build with the ceph tag: %v", Scheme, err)
	}
}
