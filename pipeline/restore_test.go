package pipeline

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/chunkstore"
)

// memTarget is a volume in memory.
type memTarget struct {
	mu     sync.Mutex
	b      []byte
	fresh  bool
	zeroed atomic.Int64
	synced bool
	delay  time.Duration
	writes atomic.Int64
	busy   atomic.Int32 // writes in flight
	most   atomic.Int32 // the most ever in flight
}

func newMemTarget(size int64, fresh bool) *memTarget {
	return &memTarget{b: make([]byte, size), fresh: fresh}
}

func (t *memTarget) WriteAt(p []byte, off int64) (int, error) {
	t.writes.Add(1)
	n := t.busy.Add(1)
	defer t.busy.Add(-1)
	for m := t.most.Load(); n > m && !t.most.CompareAndSwap(m, n); m = t.most.Load() {
	}
	if t.delay > 0 {
		time.Sleep(t.delay)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return copy(t.b[off:], p), nil
}

func (t *memTarget) Zero(off, n int64) error {
	t.zeroed.Add(n)
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.b[off : off+n])
	return nil
}

func (t *memTarget) Fresh() bool { return t.fresh }
func (t *memTarget) Sync() error { t.synced = true; return nil }

// backedUp is a store holding backup "b" of a mixedVolume of n 16 KiB
// chunks (seed seed) at zstd level, with its repository and catalog.
type backedUp struct {
	s   *chunkstore.Store
	be  *testRepo
	cat *mapCatalog
	m   *chunkstore.Manifest
	vol []byte
}

func backUp(t *testing.T, n int, seed uint64, level int) backedUp {
	t.Helper()
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	vol := mixedVolume(cs, n, seed)
	cat := newMapCatalog()
	return backedUp{s, be, cat, backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: level}), vol}
}

// TestRestoreOverExisting: a target that is not fresh gets its zero chunks
// zeroed (hole slots too); a fresh one is never zeroed.
func TestRestoreOverExisting(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	seg := testSegment
	vol := make([]byte, (2*seg+10)*cs)
	copy(vol[seg*cs:], mixedVolume(cs, 60, 21)) // slots 0 and 2 are holes
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: 1})
	old := newMemTarget(int64(len(vol)), false)
	for i := range old.b {
		old.b[i] = 0xAA
	}
	var last atomic.Int64
	err := Restore(context.Background(), RestoreInput{Store: s, BackupID: "b", Manifest: m, Locator: cat, Target: old,
		Progress: func(done, total int64) { last.Store(done) }})
	if err != nil || !bytes.Equal(old.b, vol) || !old.synced || last.Load() != int64(len(vol)) {
		t.Fatalf("restore over old data: %v, equal %v, synced %v, progress %d", err, bytes.Equal(old.b, vol), old.synced, last.Load())
	}
	fresh := newMemTarget(int64(len(vol)), true)
	if err := Restore(context.Background(), RestoreInput{Store: s, BackupID: "b", Manifest: m, Locator: cat, Target: fresh}); err != nil {
		t.Fatal(err)
	}
	if fresh.zeroed.Load() != 0 || !bytes.Equal(fresh.b, vol) {
		t.Fatalf("fresh target zeroed %d bytes", fresh.zeroed.Load())
	}
}

// TestRestoreCorruptChunk: a corrupt blob is reported through Lost, with
// the backup and the chunk's offset named.
func TestRestoreCorruptChunk(t *testing.T) {
	b := backUp(t, 40, 22, 3)
	s, be, cat, m := b.s, b.be, b.cat, b.m
	id, _ := chunkAt(t, s, "b", m, 2)
	loc, _ := cat.Locate(context.Background(), id)
	be.corrupt(t, packName(loc.Pack), int(loc.Offset+loc.Length-3))
	var lost []chunkstore.ID
	var mu sync.Mutex
	err := Restore(context.Background(), RestoreInput{Store: s, BackupID: "b", Manifest: m, Locator: cat, Target: newMemTarget(m.Size, true),
		Lost: func(_ context.Context, id chunkstore.ID, _ chunkstore.Location, cause error) error {
			mu.Lock()
			lost = append(lost, id)
			mu.Unlock()
			return cause
		}})
	if !errors.Is(err, chunkstore.ErrCorrupt) || !strings.Contains(err.Error(), "backup b: chunk at byte offset 32768") {
		t.Fatalf("err = %v", err)
	}
	if len(lost) != 1 || lost[0] != id {
		t.Fatalf("Lost told %v", lost)
	}
}

// TestRestoreCancel: cancelling mid-stream stops the writers promptly.
func TestRestoreCancel(t *testing.T) {
	b := backUp(t, 600, 23, 1)
	s, cat, m := b.s, b.cat, b.m
	tgt := newMemTarget(m.Size, true)
	tgt.delay = 2 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for tgt.writes.Load() < 10 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	err := Restore(ctx, RestoreInput{Store: s, BackupID: "b", Manifest: m, Locator: cat, Target: tgt, Writers: 2})
	if !errors.Is(err, context.Canceled) || tgt.synced {
		t.Fatalf("err = %v, synced %v", err, tgt.synced)
	}
	n := tgt.writes.Load()
	time.Sleep(20 * time.Millisecond)
	if tgt.writes.Load() != n || n > 100 {
		t.Fatalf("%d writes; still writing after cancel: %v", n, tgt.writes.Load() != n)
	}
}

// TestRestoreWriters: by default one write is in flight (a local file
// serializes them); a target that asks for more gets them overlapped.
func TestRestoreWriters(t *testing.T) {
	b := backUp(t, 120, 25, 1)
	s, cat, m, vol := b.s, b.cat, b.m, b.vol
	for _, tc := range []struct{ writers, min, max int32 }{{0, 1, 1}, {4, 2, 4}} {
		tgt := newMemTarget(m.Size, true)
		tgt.delay = time.Millisecond
		err := Restore(context.Background(), RestoreInput{Store: s, BackupID: "b", Manifest: m, Locator: cat, Target: tgt, Writers: int(tc.writers)})
		if err != nil || !bytes.Equal(tgt.b, vol) {
			t.Fatalf("writers %d: %v, equal %v", tc.writers, err, bytes.Equal(tgt.b, vol))
		}
		if most := tgt.most.Load(); most < tc.min || most > tc.max {
			t.Fatalf("writers %d: %d writes in flight at most, want %d..%d", tc.writers, most, tc.min, tc.max)
		}
	}
}

// TestRestoreSlowRepository: slow pack reads, many fetchers in flight,
// exact result.
func TestRestoreSlowRepository(t *testing.T) {
	b := backUp(t, 300, 24, 1)
	s, be, cat, m, vol := b.s, b.be, b.cat, b.m, b.vol
	be.readDelay.Store(int64(2 * time.Millisecond))
	start := time.Now()
	if got := restoreBytes(t, s, cat, "b", m); !bytes.Equal(got, vol) {
		t.Fatal("restore differs")
	}
	// 250 stored chunks at 2 ms each would take 0.5 s one at a time.
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Logf("slow restore took %v (fetchers not overlapping?)", d)
	}
}

// TestBudgetShared: two pipelines on one budget of one token never hash at
// the same time.
func TestBudgetShared(t *testing.T) {
	b := NewBudget(1)
	var in, peak atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := b.acquire(context.Background()); err != nil {
					t.Error(err)
					return
				}
				if n := in.Add(1); n > peak.Load() {
					peak.Store(n)
				}
				time.Sleep(100 * time.Microsecond)
				in.Add(-1)
				b.release()
			}
		}()
	}
	wg.Wait()
	if peak.Load() != 1 {
		t.Fatalf("%d steps at once on a budget of 1", peak.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.acquire(ctx)
	cancel()
	if err := b.acquire(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire on a full budget after cancel: %v", err)
	}
}

// segLocator locates whole segments at once, counting calls.
type segLocator struct {
	*mapCatalog
	segments, single atomic.Int64
}

func (l *segLocator) LocateSegment(ctx context.Context, g *chunkstore.Segment) ([]chunkstore.Location, error) {
	l.segments.Add(1)
	locs := make([]chunkstore.Location, len(g.IDs))
	for k, id := range g.IDs {
		locs[k], _ = l.mapCatalog.Locate(ctx, id)
	}
	return locs, nil
}

func (l *segLocator) Locate(ctx context.Context, id chunkstore.ID) (chunkstore.Location, error) {
	l.single.Add(1)
	return l.mapCatalog.Locate(ctx, id)
}

// TestSegmentLocator: restore and images locate a segment's chunks in
// one call, and fall back to Locate for a chunk the segment call could
// not locate.
func TestSegmentLocator(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	vol := mixedVolume(cs, 3*testSegment, 25)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: 1})
	sl := &segLocator{mapCatalog: cat}
	if got := restoreBytes(t, s, sl, "b", m); !bytes.Equal(got, vol) {
		t.Fatal("restore differs")
	}
	if sl.segments.Load() != 3 || sl.single.Load() != 0 {
		t.Fatalf("%d segment calls, %d single ones; want 3 and 0", sl.segments.Load(), sl.single.Load())
	}
	im := OpenImage(s, "b", m, sl, ImageOptions{ReadAhead: 4})
	defer im.Close()
	got := make([]byte, len(vol))
	if _, err := im.ReadAt(got, 0); err != nil || !bytes.Equal(got, vol) {
		t.Fatalf("image: %v", err)
	}
	if sl.single.Load() != 0 {
		t.Fatalf("the image located %d chunks one by one", sl.single.Load())
	}
	// A chunk the segment call does not know: Locate is asked (and fails here).
	id, _ := chunkAt(t, s, "b", m, 0)
	delete(cat.locs, id)
	err := Restore(context.Background(), RestoreInput{Store: s, BackupID: "b", Manifest: m, Locator: sl, Target: newMemTarget(m.Size, true)})
	if !errors.Is(err, errNotInCatalog) || sl.single.Load() == 0 {
		t.Fatalf("a chunk with no location: %v (%d single calls)", err, sl.single.Load())
	}
}

// aheadLocator closes ahead when a restore asks for its second segment.
type aheadLocator struct {
	segLocator
	ahead chan struct{}
	once  sync.Once
}

func (l *aheadLocator) LocateSegment(ctx context.Context, g *chunkstore.Segment) ([]chunkstore.Location, error) {
	if l.segLocator.segments.Load() == 1 {
		l.once.Do(func() { close(l.ahead) })
	}
	return l.segLocator.LocateSegment(ctx, g)
}

// gatedTarget holds every write until open is closed, or until
// deadline passed (and says so).
type gatedTarget struct {
	*memTarget
	open     <-chan struct{}
	deadline time.Time
	gaveUp   atomic.Bool
}

func (t *gatedTarget) WriteAt(p []byte, off int64) (int, error) {
	select {
	case <-t.open:
	case <-time.After(time.Until(t.deadline)):
		t.gaveUp.Store(true)
	}
	return t.memTarget.WriteAt(p, off)
}

// TestRestoreLocatesAhead: the next segment is located while this one's
// chunks are still being written, not after (its writes here wait for
// that), so the pipeline does not drain at each segment.
func TestRestoreLocatesAhead(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	vol := mixedVolume(cs, 2*testSegment, 26)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: 1})
	loc := &aheadLocator{segLocator: segLocator{mapCatalog: cat}, ahead: make(chan struct{})}
	tgt := &gatedTarget{memTarget: newMemTarget(m.Size, true), open: loc.ahead, deadline: time.Now().Add(3 * time.Second)}
	if err := Restore(context.Background(), RestoreInput{Store: s, BackupID: "b", Manifest: m, Locator: loc, Target: tgt}); err != nil {
		t.Fatal(err)
	}
	if tgt.gaveUp.Load() {
		t.Fatal("the second segment was located only after the first one's chunks were written")
	}
	if !bytes.Equal(tgt.b, vol) {
		t.Fatal("restore differs")
	}
	if loc.segments.Load() != 2 {
		t.Fatalf("%d segment calls, want 2", loc.segments.Load())
	}
}
