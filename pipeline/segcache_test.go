package pipeline

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/volback/volback/chunkstore"
)

// countingLocator is a segLocator that is also a Relocator, counting
// its relocations.
type countingLocator struct {
	segLocator
	relocates atomic.Int64
}

func (l *countingLocator) Relocate(ctx context.Context, id chunkstore.ID, _ chunkstore.Location, _ error) (chunkstore.Location, error) {
	l.relocates.Add(1)
	return l.mapCatalog.Locate(ctx, id)
}

// sparseVolume is three segments of testSegment chunks, each with data in
// its first four chunks only.
func sparseVolume(cs int) []byte {
	r := rand.New(rand.NewPCG(31, 32))
	vol := make([]byte, 3*testSegment*cs)
	for slot := range 3 {
		off := slot * testSegment * cs
		copy(vol[off:], randomBytes(r, 4*cs))
	}
	return vol
}

// readSlot reads the data of one segment of sparseVolume through a new
// image (with its own chunk cache) and checks it.
func readSlot(t *testing.T, s *chunkstore.Store, backup string, m *chunkstore.Manifest, loc Locator, shared *SegmentCache, vol []byte, slot int) {
	t.Helper()
	cs := s.Config().ChunkSize
	im := OpenImage(s, backup, m, loc, ImageOptions{Located: shared})
	defer im.Close()
	off := int64(slot * testSegment * cs)
	p := make([]byte, 4*cs)
	if _, err := im.ReadAt(p, off); err != nil || !bytes.Equal(p, vol[off:off+int64(len(p))]) {
		t.Fatalf("%s slot %d: %v, equal %v", backup, slot, err, bytes.Equal(p, vol[off:off+int64(len(p))]))
	}
}

// TestSegmentCacheShared: images opened with one SegmentCache locate a
// segment once, also across backups that share it.
func TestSegmentCacheShared(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	vol := sparseVolume(cs)
	cat := newMapCatalog()
	m1 := backupBytes(t, s, cat, "b1", vol, chunkstore.Compression{Level: 1})
	cat.counted = 0 // a second reference list
	m2 := backupBytes(t, s, cat, "b2", vol, chunkstore.Compression{Level: 1})
	loc := &countingLocator{segLocator: segLocator{mapCatalog: cat}}
	shared := NewSegmentCache(1 << 20)
	for range 3 {
		readSlot(t, s, "b1", m1, loc, shared, vol, 1)
	}
	readSlot(t, s, "b2", m2, loc, shared, vol, 1) // same segment content
	if n := loc.segments.Load(); n != 1 {
		t.Fatalf("4 opens of one segment located it %d times, want 1", n)
	}
	if hits, misses := shared.Stats(); hits != 3 || misses != 1 {
		t.Fatalf("stats: %d hits %d misses, want 3 and 1", hits, misses)
	}
	// Without a shared cache, every open locates again.
	readSlot(t, s, "b1", m1, loc, nil, vol, 1)
	if n := loc.segments.Load(); n != 2 {
		t.Fatalf("an unshared open located %d segments in all, want 2", n-1)
	}
}

// TestSegmentCacheEviction: the cache holds what its bytes allow, least
// recently used out first, and always the latest segment.
func TestSegmentCacheEviction(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	vol := sparseVolume(cs)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b1", vol, chunkstore.Compression{Level: 1})
	loc := &countingLocator{segLocator: segLocator{mapCatalog: cat}}
	shared := NewSegmentCache(1) // less than one segment
	readSlot(t, s, "b1", m, loc, shared, vol, 0)
	readSlot(t, s, "b1", m, loc, shared, vol, 1)
	readSlot(t, s, "b1", m, loc, shared, vol, 1) // the latest is kept
	if n := loc.segments.Load(); n != 2 {
		t.Fatalf("located %d segments, want 2", n)
	}
	readSlot(t, s, "b1", m, loc, shared, vol, 0) // evicted by slot 1
	if n := loc.segments.Load(); n != 3 {
		t.Fatalf("located %d segments, want 3 (slot 0 again)", n)
	}
	// Room for two of the three (~4.6 KiB each here): reading 0, 1, 2
	// evicts 0 only.
	shared = NewSegmentCache(10 << 10)
	for slot := range 3 {
		readSlot(t, s, "b1", m, loc, shared, vol, slot)
	}
	shared.c.mu.Lock()
	n, bytes := shared.c.lru.Len(), shared.c.bytes
	shared.c.mu.Unlock()
	if n != 2 || bytes > 5*4*testSegment {
		t.Fatalf("cache holds %d segments, %d bytes, want 2 within %d", n, bytes, 5*4*testSegment)
	}
	before := loc.segments.Load()
	readSlot(t, s, "b1", m, loc, shared, vol, 2)
	readSlot(t, s, "b1", m, loc, shared, vol, 1)
	if loc.segments.Load() != before {
		t.Fatal("slots 1 and 2 were evicted")
	}
	readSlot(t, s, "b1", m, loc, shared, vol, 0)
	if loc.segments.Load() != before+1 {
		t.Fatal("slot 0 was not evicted")
	}
}

// TestSegmentCacheMovedChunk: when a GC moved the chunks of a cached
// segment, the first image that misses locates the segment again, once
// for all of them, and replaces it in the shared cache; the next images
// read at the new place with no miss.
func TestSegmentCacheMovedChunk(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	vol := sparseVolume(cs)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b1", vol, chunkstore.Compression{Level: 1})
	loc := &countingLocator{segLocator: segLocator{mapCatalog: cat}}
	shared := NewSegmentCache(1 << 20)
	readSlot(t, s, "b1", m, loc, shared, vol, 1)

	// Move every pack (as a repack would) and update the catalog.
	ctx := context.Background()
	cat.mu.Lock()
	moved := map[chunkstore.ID]chunkstore.ID{}
	for id, l := range cat.locs {
		to, ok := moved[l.Pack]
		if !ok {
			data, err := be.Get(ctx, packName(l.Pack))
			if err != nil {
				t.Fatal(err)
			}
			to = chunkstore.Sum(append([]byte("moved"), l.Pack[:]...))
			if err := be.Put(ctx, packName(to), data); err != nil {
				t.Fatal(err)
			}
			if err := be.Delete(ctx, packName(l.Pack)); err != nil {
				t.Fatal(err)
			}
			moved[l.Pack] = to
		}
		l.Pack = to
		cat.locs[id] = l
	}
	cat.mu.Unlock()

	readSlot(t, s, "b1", m, loc, shared, vol, 1)
	if n, r := loc.segments.Load(), loc.relocates.Load(); n != 2 || r != 0 {
		t.Fatalf("after the move: %d segments located (want 2), %d chunks relocated one by one (want 0)", n, r)
	}
	for range 2 {
		readSlot(t, s, "b1", m, loc, shared, vol, 1)
	}
	if n, r := loc.segments.Load(), loc.relocates.Load(); n != 2 || r != 0 {
		t.Fatalf("opens after the move: %d segments located (want 2), %d relocated (want 0)", n, r)
	}
}
