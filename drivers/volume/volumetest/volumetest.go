// Package volumetest is the conformance suite every volume driver runs: the
// behaviour the service relies on, checked against real volumes (image
// files, loop block devices, RBD images).
package volumetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/drivers/volume"
)

// MiB is a mebibyte.
const MiB = 1 << 20

// Harness tells the suite how to get volumes of one driver and what they
// can do. New and Free must clean up after themselves (t.Cleanup).
type Harness struct {
	// Driver is the driver name Stat must report ("file", "block", "rbd").
	Driver string
	// Size is the size of the volumes the suite uses; 0 means 16 MiB.
	Size int64
	// New returns the locator of an existing volume of size bytes that
	// reads as zeros and that the suite may overwrite.
	New func(t *testing.T, size int64) string
	// Free returns a locator where no volume exists and CreateTarget may
	// make one; nil when the driver cannot create volumes (block devices).
	Free func(t *testing.T) string
	// Sparse is set when Allocated leaves holes out (image files on a
	// filesystem with SEEK_HOLE); otherwise it may report the whole volume.
	Sparse bool
	// SnapshotMethod is the Method Snapshot must report, or "" when the
	// driver must refuse to snapshot these volumes with ErrNotSupported.
	SnapshotMethod string
	// Holders are the ways these volumes are put in use.
	Holders []Holder
	// GatheredWrites is set when the driver's targets may hold writes
	// back until Sync (as a restore target gathers them into whole
	// objects), so a writer that needs its writes seen in order syncs
	// after each one.
	GatheredWrites bool
}

// Holder puts a volume in use the way its real users do.
type Holder struct {
	Name string
	// Hold makes the volume at locator in use until release is called
	// (or the test ends) and returns text the Usage's Reason must
	// contain ("backs /dev/loop3", "mounted at /tmp/x").
	Hold func(t *testing.T, locator string) (reason string, release func())
}

// Run runs the suite on driver d.
func Run(t *testing.T, d volume.Driver, h Harness) {
	if h.Size == 0 {
		h.Size = 16 * MiB
	}
	s := &suite{d: d, h: h}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"Registered", s.testRegistered},
		{"Stat", s.testStat},
		{"RoundTrip", s.testRoundTrip},
		{"Zero", s.testZero},
		{"Bounds", s.testBounds},
		{"Concurrent", s.testConcurrent},
		{"Create", s.testCreate},
		{"Missing", s.testMissing},
		{"Snapshot", s.testSnapshot},
		{"SnapshotUnderWriter", s.testSnapshotUnderWriter},
		{"ChangeTracking", s.testChangeTracking},
		{"InUse", s.testInUse},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	d volume.Driver
	h Harness
}

var ctx = context.Background()

// Random returns n random bytes.
func Random(t testing.TB, n int) []byte {
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *suite) source(t *testing.T, loc string) volume.Source {
	t.Helper()
	src, err := s.d.OpenSource(loc)
	if err != nil {
		t.Fatalf("OpenSource(%s): %v", loc, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func (s *suite) target(t *testing.T, loc string) volume.Target {
	t.Helper()
	tg, err := s.d.OpenTarget(loc)
	if err != nil {
		t.Fatalf("OpenTarget(%s): %v", loc, err)
	}
	return tg
}

// write writes pieces (offset -> bytes) through a target and syncs.
func (s *suite) write(t *testing.T, loc string, pieces map[int64][]byte) {
	t.Helper()
	tg := s.target(t, loc)
	defer tg.Close()
	for off, p := range pieces {
		if n, err := tg.WriteAt(p, off); err != nil || n != len(p) {
			t.Fatalf("WriteAt(%s, %d bytes at %d): %d, %v", loc, len(p), off, n, err)
		}
	}
	if err := tg.Sync(); err != nil {
		t.Fatalf("Sync(%s): %v", loc, err)
	}
	if err := tg.Close(); err != nil {
		t.Fatalf("Close(%s): %v", loc, err)
	}
}

func readAt(t *testing.T, r io.ReaderAt, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if got, err := r.ReadAt(p, off); got != n || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt(%d bytes at %d): %d, %v", n, off, got, err)
	}
	return p
}

// checkExtents requires exts sorted, non-overlapping, non-empty and inside
// [0, size).
func checkExtents(t *testing.T, what string, exts []volume.Extent, size int64) {
	t.Helper()
	end := int64(0)
	for i, e := range exts {
		if e.Length <= 0 || e.Offset < end || e.Offset+e.Length > size {
			t.Fatalf("%s: extent %d %+v is empty, overlaps or is unsorted, or leaves the volume of %d bytes: %v", what, i, e, size, exts)
		}
		end = e.Offset + e.Length
	}
}

func covered(exts []volume.Extent, off int64) bool {
	for _, e := range exts {
		if off >= e.Offset && off < e.Offset+e.Length {
			return true
		}
	}
	return false
}

func (s *suite) testRegistered(t *testing.T) {
	loc := s.h.New(t, s.h.Size)
	d, err := volume.Lookup(loc)
	if err != nil {
		t.Fatalf("volume.Lookup(%s): %v: the driver is not registered for its scheme", loc, err)
	}
	if fmt.Sprintf("%T", d) != fmt.Sprintf("%T", s.d) {
		t.Fatalf("volume.Lookup(%s) = %T, want %T", loc, d, s.d)
	}
}

func (s *suite) testStat(t *testing.T) {
	loc := s.h.New(t, s.h.Size)
	info, err := s.d.Stat(loc)
	if err != nil {
		t.Fatal(err)
	}
	if info.Driver != s.h.Driver || info.Size != s.h.Size || info.Locator == "" {
		t.Fatalf("Stat(%s) = %+v, want driver %q and size %d", loc, info, s.h.Driver, s.h.Size)
	}
	again, err := s.d.Stat(info.Locator)
	if err != nil || again != info {
		t.Fatalf("Stat of the canonical locator %s: %+v, %v; want %+v", info.Locator, again, err, info)
	}
}

// testRoundTrip writes scattered pieces (one straddling a 4 KiB boundary,
// one at the last byte) and checks the bytes, and that Allocated covers
// every written byte (and, on sparse volumes, not the holes).
func (s *suite) testRoundTrip(t *testing.T) {
	size := s.h.Size
	loc := s.h.New(t, size)
	pieces := map[int64][]byte{
		0:                  Random(t, 4096),
		size/3 + 100:       Random(t, 10),
		size / 2:           Random(t, 64<<10),
		size/4 - 300:       Random(t, 600),
		size - 1:           {0xAB},
		size/8*5 + 4096*3:  Random(t, 4096),
		size/8*5 + 4096*10: Random(t, 1),
	}
	s.write(t, loc, pieces)
	src := s.source(t, loc)
	if src.Size() != size {
		t.Fatalf("Size %d, want %d", src.Size(), size)
	}
	exts, err := src.Allocated(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkExtents(t, "Allocated", exts, size)
	var total int64
	for _, e := range exts {
		total += e.Length
	}
	for off, p := range pieces {
		for i := range int64(len(p)) {
			if !covered(exts, off+i) {
				t.Fatalf("written byte at %d is in no allocated extent: %v", off+i, exts)
			}
		}
		if got := readAt(t, src, off, len(p)); !bytes.Equal(got, p) {
			t.Fatalf("ReadAt %d: not the bytes written", off)
		}
	}
	holes := []int64{size / 8, size/8*7 - 8192}
	for _, off := range holes {
		if got := readAt(t, src, off, 4096); !bytes.Equal(got, make([]byte, 4096)) {
			t.Fatalf("never written range at %d does not read as zeros", off)
		}
		if s.h.Sparse && covered(exts, off) {
			t.Fatalf("Allocated covers the hole at %d: %v", off, exts)
		}
	}
	if s.h.Sparse && total > size/4 {
		t.Fatalf("Allocated reports %d of %d bytes after writing a few pieces: holes are not left out", total, size)
	}
}

// testZero zeroes an unaligned range inside written data.
func (s *suite) testZero(t *testing.T) {
	loc := s.h.New(t, s.h.Size)
	data := Random(t, 2*MiB)
	s.write(t, loc, map[int64][]byte{0: data})
	tg := s.target(t, loc)
	const off, n = MiB/2 + 123, MiB + 1000
	// A write just before the range, through the same target, shares a
	// page or sector with it and must survive the zeroing.
	edge := Random(t, 500)
	if _, err := tg.WriteAt(edge, off-500); err != nil {
		t.Fatal(err)
	}
	if err := tg.Zero(off, n); err != nil {
		t.Fatalf("Zero(%d, %d): %v", off, n, err)
	}
	if err := tg.Zero(5, 0); err != nil {
		t.Fatalf("Zero of nothing: %v", err)
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	copy(want[off-500:], edge)
	clear(want[off : off+n])
	if got := readAt(t, s.source(t, loc), 0, len(data)); !bytes.Equal(got, want) {
		t.Fatal("after Zero the volume does not read as the data with zeros in the range")
	}
}

// testBounds refuses writes and zeroing past the end, and keeps the size.
func (s *suite) testBounds(t *testing.T) {
	size := s.h.Size
	loc := s.h.New(t, size)
	tg := s.target(t, loc)
	defer tg.Close()
	if tg.Size() != size || tg.Fresh() {
		t.Fatalf("OpenTarget: Size %d Fresh %v, want %d and false", tg.Size(), tg.Fresh(), size)
	}
	for _, c := range []struct {
		off int64
		n   int
	}{{size - 1, 2}, {size, 1}, {size + MiB, 10}, {-1, 1}} {
		if n, err := tg.WriteAt(make([]byte, c.n), c.off); err == nil {
			t.Errorf("WriteAt of %d bytes at %d on a volume of %d bytes wrote %d: a target must refuse to grow", c.n, c.off, size, n)
		}
	}
	if err := tg.Zero(size-10, 11); err == nil {
		t.Error("Zero past the end succeeded")
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	if info, err := s.d.Stat(loc); err != nil || info.Size != size {
		t.Fatalf("after refused writes Stat = %+v, %v; want size %d", info, err, size)
	}
	src := s.source(t, loc)
	if n, err := src.ReadAt(make([]byte, 10), size); n != 0 || err == nil {
		t.Fatalf("ReadAt at the end: %d, %v; want 0 bytes and an error (io.EOF)", n, err)
	}
}

// testConcurrent writes distinct blocks from several goroutines through
// one target, then reads them back from several through one source.
func (s *suite) testConcurrent(t *testing.T) {
	loc := s.h.New(t, s.h.Size)
	const block, workers, per = 64 << 10, 8, 8
	data := Random(t, block*workers*per)
	tg := s.target(t, loc)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				off := int64((i*workers + w) * block)
				if _, err := tg.WriteAt(data[off:off+block], off); err != nil {
					t.Errorf("concurrent WriteAt at %d: %v", off, err)
				}
			}
		})
	}
	wg.Wait()
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	tg.Close()
	src := s.source(t, loc)
	for w := range workers {
		wg.Go(func() {
			p := make([]byte, block)
			for i := range per {
				off := int64((w*per + i) * block)
				if _, err := src.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+block]) {
					t.Errorf("concurrent ReadAt at %d: %v or wrong bytes", off, err)
				}
			}
		})
	}
	wg.Wait()
}

// testCreate makes a new volume, refuses to make one over it or with a
// size that is not whole sectors, and deletes it.
func (s *suite) testCreate(t *testing.T) {
	if s.h.Free == nil {
		t.Skipf("the %s driver does not create volumes here", s.h.Driver)
	}
	size := s.h.Size
	loc := s.h.Free(t)
	tg, err := s.d.CreateTarget(loc, size)
	if err != nil {
		t.Fatalf("CreateTarget(%s, %d): %v", loc, size, err)
	}
	if !tg.Fresh() || tg.Size() != size {
		t.Fatalf("CreateTarget: Fresh %v Size %d, want true and %d", tg.Fresh(), tg.Size(), size)
	}
	mark := Random(t, 512)
	if _, err := tg.WriteAt(mark, size-512); err != nil {
		t.Fatal(err)
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	if info, err := s.d.Stat(loc); err != nil || info.Size != size || info.Driver != s.h.Driver {
		t.Fatalf("Stat of the created volume: %+v, %v", info, err)
	}
	src := s.source(t, loc)
	if got := readAt(t, src, 0, MiB); !bytes.Equal(got, make([]byte, MiB)) {
		t.Fatal("a created volume does not read as zeros")
	}
	src.Close()

	if tg, err := s.d.CreateTarget(loc, size); err == nil || !strings.Contains(err.Error(), "exists") {
		if err == nil {
			tg.Close()
		}
		t.Fatalf("CreateTarget over an existing volume: %v, want a refusal saying it exists", err)
	}
	if got := readAt(t, s.source(t, loc), size-512, 512); !bytes.Equal(got, mark) {
		t.Fatal("a refused CreateTarget changed the existing volume")
	}
	for _, bad := range []int64{1000, 1, -512} {
		other := s.h.Free(t)
		if tg, err := s.d.CreateTarget(other, bad); err == nil {
			tg.Close()
			t.Errorf("CreateTarget of %d bytes succeeded; sizes are whole 512-byte sectors", bad)
		} else if !strings.Contains(err.Error(), other) {
			t.Errorf("CreateTarget of %d bytes: %v does not name the volume", bad, err)
		}
		if _, err := s.d.Stat(other); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("a refused CreateTarget of %d bytes left a volume behind: Stat %v", bad, err)
		}
	}

	if err := s.d.Delete(loc); err != nil {
		t.Fatalf("Delete(%s): %v", loc, err)
	}
	if _, err := s.d.Stat(loc); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v, want ErrNotFound", err)
	}
	if err := s.d.Delete(loc); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("Delete of a deleted volume: %v, want ErrNotFound", err)
	}
}

// testMissing: every way to open a missing volume says so, naming it.
func (s *suite) testMissing(t *testing.T) {
	if s.h.Free == nil {
		t.Skipf("the %s harness has no free locators", s.h.Driver)
	}
	loc := s.h.Free(t)
	errs := map[string]error{}
	_, errs["Stat"] = s.d.Stat(loc)
	_, errs["InUse"] = s.d.InUse(loc)
	if src, err := s.d.OpenSource(loc); err == nil {
		src.Close()
	} else {
		errs["OpenSource"] = err
	}
	if tg, err := s.d.OpenTarget(loc); err == nil {
		tg.Close()
	} else {
		errs["OpenTarget"] = err
	}
	for _, name := range []string{"Stat", "InUse", "OpenSource", "OpenTarget"} {
		err := errs[name]
		if !errors.Is(err, volume.ErrNotFound) || !strings.Contains(fmt.Sprint(err), loc) {
			t.Errorf("%s of a missing volume: %v; want ErrNotFound naming %s", name, err, loc)
		}
	}
}

// testSnapshot: a snapshot keeps the bytes of its moment while the volume
// changes, opens as a Source, refuses a reused or bad name, and deletes.
func (s *suite) testSnapshot(t *testing.T) {
	size := s.h.Size
	loc := s.h.New(t, size)
	if s.h.SnapshotMethod == "" {
		_, err := s.d.Snapshot(ctx, loc, "s1")
		if !errors.Is(err, volume.ErrNotSupported) || !strings.Contains(err.Error(), loc) {
			t.Fatalf("Snapshot of a volume that cannot be snapshotted: %v; want ErrNotSupported naming %s", err, loc)
		}
		return
	}
	a := map[int64][]byte{0: Random(t, MiB), size / 2: Random(t, MiB)}
	s.write(t, loc, a)
	snap, err := s.d.Snapshot(ctx, loc, "s1")
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	t.Cleanup(func() { s.d.DeleteSnapshot(loc, "s1") })
	if snap.Name != "s1" || snap.Method != s.h.SnapshotMethod || snap.Size != size || snap.Locator == "" {
		t.Fatalf("Snapshot = %+v, want name s1, method %s, size %d", snap, s.h.SnapshotMethod, size)
	}
	b := map[int64][]byte{0: Random(t, MiB), size / 2: Random(t, MiB)}
	s.write(t, loc, b)

	ss := s.source(t, snap.Locator)
	vs := s.source(t, loc)
	if ss.Size() != size {
		t.Fatalf("snapshot Size %d, want %d", ss.Size(), size)
	}
	for off := range a {
		if got := readAt(t, ss, off, MiB); !bytes.Equal(got, a[off]) {
			t.Fatalf("snapshot at %d does not hold the bytes of its moment: writes to the volume reached it", off)
		}
		if got := readAt(t, vs, off, MiB); !bytes.Equal(got, b[off]) {
			t.Fatalf("volume at %d does not hold the bytes written after the snapshot", off)
		}
	}
	if got := readAt(t, ss, size/4, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("snapshot does not read zeros where the volume had none")
	}
	ss.Close()

	if _, err := s.d.Snapshot(ctx, loc, "s1"); err == nil || !strings.Contains(err.Error(), "s1") {
		t.Errorf("a second snapshot named s1: %v, want a refusal naming it", err)
	}
	for _, bad := range []string{"", "../x", "a/b", ".hidden", strings.Repeat("n", 300)} {
		if sn, err := s.d.Snapshot(ctx, loc, bad); err == nil {
			s.d.DeleteSnapshot(loc, bad)
			t.Errorf("snapshot named %q was taken as %s; want a refusal", bad, sn.Locator)
		}
	}
	if err := s.d.DeleteSnapshot(loc, "s1"); err != nil {
		t.Fatalf("DeleteSnapshot: %v", err)
	}
	if src, err := s.d.OpenSource(snap.Locator); !errors.Is(err, volume.ErrNotFound) {
		if err == nil {
			src.Close()
		}
		t.Fatalf("OpenSource of a deleted snapshot: %v, want ErrNotFound", err)
	}
	if err := s.d.DeleteSnapshot(loc, "s1"); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("DeleteSnapshot of a deleted snapshot: %v, want ErrNotFound", err)
	}
	if got := readAt(t, s.source(t, loc), 0, MiB); !bytes.Equal(got, b[0]) {
		t.Fatal("deleting the snapshot changed the volume")
	}
}

// stampSize is the unit the writer of testSnapshotUnderWriter stamps.
const stampSize = 4096

func stamp(gen, block uint64) []byte {
	p := make([]byte, stampSize)
	binary.LittleEndian.PutUint64(p, gen)
	binary.LittleEndian.PutUint64(p[8:], block)
	copy(p[16:], bytes.Repeat([]byte{byte(gen)}, stampSize-16))
	return p
}

// sweepOrder is the order the writer of testSnapshotUnderWriter stamps
// blocks in: from both ends inwards (0, n-1, 1, n-2, ...). A copy that
// reads front to back crosses such a writer at two different times, so a
// copy taken under it cannot pass for one cut, as it could under a
// front-to-back writer it overtakes once.
func sweepOrder(n uint64) []uint64 {
	order := make([]uint64, 0, n)
	for lo, hi := uint64(0), n; lo < hi; lo++ {
		order = append(order, lo)
		if hi--; hi > lo {
			order = append(order, hi)
		}
	}
	return order
}

// testSnapshotUnderWriter snapshots a volume while a writer sweeps it over
// and over in sweepOrder, stamping each 4 KiB block with its pass number.
// A point-in-time snapshot holds one cut of that sweep (blocks written
// before the cut one pass ahead of those after it) and keeps it while the writer goes on. A copy
// method cannot be point in time while the writer writes, so it must
// refuse, or, if the writer did not run while it copied, hold one cut.
func (s *suite) testSnapshotUnderWriter(t *testing.T) {
	if s.h.SnapshotMethod == "" {
		t.Skip("the volumes of this harness cannot be snapshotted (Snapshot checks the refusal)")
	}
	size := s.h.Size
	loc := s.h.New(t, size)
	blocks := uint64(size / stampSize)
	order := sweepOrder(blocks)
	tg := s.target(t, loc)
	var pass atomic.Uint64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		defer tg.Close()
		for gen := uint64(1); ; gen++ {
			pass.Store(gen)
			for _, b := range order {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if _, err := tg.WriteAt(stamp(gen, b), int64(b*stampSize)); err != nil {
					done <- err
					return
				}
				if s.h.GatheredWrites {
					if err := tg.Sync(); err != nil {
						done <- err
						return
					}
				}
			}
		}
	}()
	halt := func() {
		select {
		case <-stop:
			return
		default:
		}
		close(stop)
		if err := <-done; err != nil {
			t.Errorf("writer: %v", err)
		}
	}
	defer halt()
	waitPass := func(n uint64) {
		for deadline := time.Now().Add(time.Minute); pass.Load() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the writer did not reach pass %d in a minute", n)
			}
		}
	}
	waitPass(2) // every block is stamped

	snap, err := s.d.Snapshot(ctx, loc, "live")
	if s.h.SnapshotMethod == volume.MethodCopy && err != nil {
		if !errors.Is(err, volume.ErrInUse) || !strings.Contains(fmt.Sprint(err), loc) {
			t.Fatalf("copy snapshot under a writer: %v; want a refusal (ErrInUse) naming %s: a copy taken while the volume changes is not one point in time", err, loc)
		}
		if err := s.d.DeleteSnapshot(loc, "live"); !errors.Is(err, volume.ErrNotFound) {
			t.Fatalf("a refused copy snapshot left a snapshot behind: DeleteSnapshot %v", err)
		}
		return
	}
	if s.h.SnapshotMethod == volume.MethodCopy {
		// The writer may not have run while the copy was made (a busy
		// machine): then the copy is one point in time, as checked below.
		t.Logf("the copy snapshot was accepted; checking it is one point in time")
	}
	if err != nil {
		t.Fatalf("Snapshot under a writer: %v", err)
	}
	t.Cleanup(func() { s.d.DeleteSnapshot(loc, "live") })
	src := s.source(t, snap.Locator)
	first := readAt(t, src, 0, int(blocks*stampSize))
	var hi, lo, prev uint64
	for i, b := range order {
		p := first[b*stampSize : (b+1)*stampSize]
		gen, idx := binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
		if idx != b || !bytes.Equal(p, stamp(gen, b)) {
			t.Fatalf("snapshot block %d is torn or misplaced (stamp says pass %d block %d)", b, gen, idx)
		}
		if i == 0 {
			hi, lo = gen, gen
		}
		if gen > lo {
			t.Fatalf("snapshot block %d is from pass %d but block %d, written before it, from pass %d: not one point in time", b, gen, prev, lo)
		}
		lo, prev = gen, b
	}
	if hi-lo > 1 {
		t.Fatalf("snapshot spans passes %d to %d: not one point in time", lo, hi)
	}
	now := pass.Load()
	waitPass(now + 2) // the writer overwrote every block since
	halt()
	if again := readAt(t, src, 0, int(blocks*stampSize)); !bytes.Equal(again, first) {
		t.Fatal("the snapshot changed while the writer went on writing the volume")
	}
	if vol := readAt(t, s.source(t, loc), 0, stampSize); bytes.Equal(vol, first[:stampSize]) {
		t.Fatal("the volume still reads as the snapshot: the writer's later passes did not reach it")
	}
}

// testChangeTracking: a driver that tracks changes reports extents inside
// the volume that cover what was written since the snapshot.
func (s *suite) testChangeTracking(t *testing.T) {
	size := s.h.Size
	loc := s.h.New(t, size)
	probe := s.source(t, loc)
	if _, ok := probe.(volume.ChangeTracker); !ok {
		t.Skipf("%T does not track changes (volume.ChangeTracker)", probe)
	}
	probe.Close()
	if _, err := s.d.Snapshot(ctx, loc, "base"); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	t.Cleanup(func() { s.d.DeleteSnapshot(loc, "base") })
	const off, n = 3*MiB + 777, 100000
	s.write(t, loc, map[int64][]byte{off: Random(t, n), size - 1: {1}})
	src := s.source(t, loc)
	exts, err := src.(volume.ChangeTracker).Changed(ctx, "base")
	if err != nil {
		t.Fatalf("Changed: %v", err)
	}
	checkExtents(t, "Changed", exts, size)
	for _, o := range []int64{off, off + n/2, off + n - 1, size - 1} {
		if !covered(exts, o) {
			t.Fatalf("byte %d written since the snapshot is in no changed extent: %v", o, exts)
		}
	}
}

// testInUse: each holder makes InUse say so and why, OpenTarget refuse
// (naming the holder), reading still work; released, all is free again.
func (s *suite) testInUse(t *testing.T) {
	if len(s.h.Holders) == 0 {
		t.Fatalf("the %s harness names no way to put a volume in use; every driver detects at least one", s.h.Driver)
	}
	for _, ho := range s.h.Holders {
		t.Run(ho.Name, func(t *testing.T) {
			loc := s.h.New(t, s.h.Size)
			if u, err := s.d.InUse(loc); err != nil || u.InUse {
				t.Fatalf("InUse of an idle volume: %+v, %v", u, err)
			}
			reason, release := ho.Hold(t, loc)
			u, err := s.d.InUse(loc)
			if err != nil || !u.InUse || !strings.Contains(u.Reason, reason) || u.Fix == "" {
				release()
				t.Fatalf("InUse while %s: %+v, %v; want in use, a reason containing %q and a fix", ho.Name, u, err, reason)
			}
			tg, err := s.d.OpenTarget(loc)
			if err == nil {
				tg.Close()
				release()
				t.Fatalf("OpenTarget while %s succeeded; it must refuse a volume in use", ho.Name)
			}
			if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), reason) || !strings.Contains(err.Error(), loc) {
				release()
				t.Fatalf("OpenTarget while %s: %v; want ErrInUse naming %s and %q", ho.Name, err, loc, reason)
			}
			if src, err := s.d.OpenSource(loc); err != nil {
				release()
				t.Fatalf("OpenSource while %s: %v; reading a volume in use is allowed", ho.Name, err)
			} else {
				src.Close()
			}
			release()
			if u, err := s.d.InUse(loc); err != nil || u.InUse {
				t.Fatalf("InUse after the holder let go: %+v, %v", u, err)
			}
			tg = s.target(t, loc)
			tg.Close()
		})
	}
}
