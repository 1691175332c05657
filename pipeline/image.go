package pipeline

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
)

// Locator finds where a chunk is stored (implemented over the catalog).
type Locator interface {
	Locate(ctx context.Context, id chunkstore.ID) (chunkstore.Location, error)
}

// Relocator is a Locator that can look again when a chunk was not where
// Locate said (garbage collection moved it since) or was found corrupt.
// It returns the new location, or an error when there is none (it may
// then record the chunk as lost). Images call it once per failed read.
type Relocator interface {
	Relocate(ctx context.Context, id chunkstore.ID, old chunkstore.Location, cause error) (chunkstore.Location, error)
}

// SegmentLocator is a Locator that locates a whole segment's chunks at
// once (one catalog transaction, or one call to the catalog's owner, for
// 16384 chunks): the locations of g.IDs, in order, a zero Location for a
// chunk it cannot locate (Locate then says why). Images and restores use
// it when it is there.
type SegmentLocator interface {
	Locator
	LocateSegment(ctx context.Context, g *chunkstore.Segment) ([]chunkstore.Location, error)
}

// maxReadAheadWorkers is the goroutines an image fetches chunks with
// besides the reader: enough to keep several preads in flight on a cold
// repository while the cores decode and verify.
const maxReadAheadWorkers = 8

// Image is a read-only view of one backup: io.ReaderAt over the manifest,
// with verified, cached chunk reads, the chunks of one read fetched in
// parallel, and read-ahead for sequential readers. Its manifest segments
// are loaded as reads reach them and kept in a small LRU, so opening costs
// the same whatever the image size. Safe for concurrent use.
type Image struct {
	s       *chunkstore.Store
	m       *chunkstore.Manifest
	backup  string
	loc     Locator
	cache   *Cache
	segs    *segmentCache
	name    string
	ra      int
	bufSize int // cache buffer size for one chunk of this image
	ctx     context.Context
	cancel  context.CancelFunc

	lastEnd   atomic.Int64 // end of the previous read, to spot sequential readers
	run       atomic.Int64 // bytes read in the current sequential run
	scheduled atomic.Int64 // read-ahead was queued for chunks below this index
	prefetch  chan chunkRef
	startOnce sync.Once
	wg        sync.WaitGroup
}

// ImageOptions tune reads.
type ImageOptions struct {
	Cache     *Cache // shared; nil = a small private one
	ReadAhead int    // chunks fetched ahead of a sequential reader
	Segments  int    // decoded manifest segments kept (default 4, ~1.3 MiB each)
	Name      string // for error messages; default the backup id
}

// OpenImage opens a view of backup backupID described by manifest head m.
// The cache should hold several times ReadAhead chunks, or read-ahead is
// evicted unused.
func OpenImage(s *chunkstore.Store, backupID string, m *chunkstore.Manifest, loc Locator, opt ImageOptions) *Image {
	ra := max(opt.ReadAhead, 0)
	c := opt.Cache
	if c == nil {
		c = NewCache(max(32<<20, int64(2*(ra+4)*m.ChunkSize)))
	}
	name := opt.Name
	if name == "" {
		name = backupID
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Room for a whole raw blob (header included) or a decoded chunk plus
	// ZstdSlack, rounded to the runtime's 8 KiB pages so the cache counts
	// what the buffer really occupies.
	bufSize := (5 + s.BlobOverhead() + max(m.ChunkSize, 0) + chunkstore.ZstdSlack + 8<<10 - 1) &^ (8<<10 - 1)
	im := &Image{s: s, m: m, backup: backupID, loc: loc, cache: c, name: name, ra: ra, bufSize: bufSize,
		ctx: ctx, cancel: cancel, prefetch: make(chan chunkRef, 2*ra+64)}
	segs := opt.Segments
	if segs <= 0 {
		segs = 4
	}
	im.segs = newSegmentCache(max(segs, 2), im.loadSegment)
	return im
}

func (im *Image) Size() int64 { return im.m.Size }

// loadSegment reads and verifies the segment of slot (nil: all zeros),
// located at once when the locator can.
func (im *Image) loadSegment(slot int) (*located, error) {
	k, ok := im.m.Find(slot)
	if !ok {
		return nil, nil
	}
	g, err := im.s.LoadSegment(im.ctx, im.backup, im.m, k)
	if err != nil {
		return nil, err
	}
	l := &located{g: g}
	if sl, ok := im.loc.(SegmentLocator); ok {
		if l.locs, err = sl.LocateSegment(im.ctx, g); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// located is a segment and, when known, its chunks' locations.
type located struct {
	g    *chunkstore.Segment
	locs []chunkstore.Location // by ref-1; nil: ask the Locator per chunk
}

// chunkRef is one chunk of an image: its ID and, when known, where it is.
type chunkRef struct {
	id     chunkstore.ID
	loc    chunkstore.Location
	hasLoc bool
}

// chunk returns chunk i, false for a zero chunk.
func (im *Image) chunk(i int64) (chunkRef, bool, error) {
	l, err := im.segs.get(int(i / int64(im.m.SegmentChunks)))
	if err != nil || l == nil {
		return chunkRef{}, false, err
	}
	r := l.g.Refs[i-l.g.First]
	if r == 0 {
		return chunkRef{}, false, nil
	}
	c := chunkRef{id: l.g.IDs[r-1]}
	if l.locs != nil && l.locs[r-1].Length != 0 { // else lost: Locate says so
		c.loc, c.hasLoc = l.locs[r-1], true
	}
	return c, true, nil
}

// ReadAt reads len(p) bytes at off. Zero chunks cost no I/O. Errors name
// the backup and the offset of the chunk that failed.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	n, eof, err := im.span(off, len(p))
	if err != nil || n == 0 {
		return 0, err
	}
	done, err := im.each(off, n, func(done, k int, b []byte, e *cacheEntry) {
		if e == nil {
			clear(p[done : done+k])
		} else {
			copy(p[done:], b)
			im.cache.release(e)
		}
	})
	if err != nil {
		return done, err
	}
	return n, eof
}

// slices is a read's bytes left where they are: in cached chunks, held
// until release, and in a shared buffer of zeros for zero chunks.
type slices struct {
	im      *Image
	vecs    [][]byte
	entries []*cacheEntry
}

// release lets go of the cached chunks; calling it again does nothing.
func (s *slices) release() {
	for _, e := range s.entries {
		s.im.cache.release(e)
	}
	s.entries, s.vecs = nil, nil
}

// zeros backs the zero chunks of ReadSlices. Never written.
var zeros = make([]byte, 1<<20)

// ReadSlices is ReadAt without the copy, for a server that can send
// several buffers at once (writev): it returns the bytes at off, n of
// them (fewer at the end of the image, with io.EOF), as slices of cached
// chunks and of a shared buffer of zeros. The chunks stay held (not
// recycled) until the caller calls release, and the slices must not be
// written or used after. release is never nil (on error it has nothing
// to do) and may be called more than once. Chunks are verified when they
// enter the cache, as for ReadAt.
func (im *Image) ReadSlices(off int64, n int) (vecs [][]byte, release func(), err error) {
	s := &slices{im: im}
	n, eof, err := im.span(off, n)
	if err != nil || n == 0 {
		return nil, s.release, err
	}
	if _, err := im.each(off, n, func(_, k int, b []byte, e *cacheEntry) {
		if e != nil {
			s.entries = append(s.entries, e)
			s.vecs = append(s.vecs, b)
			return
		}
		for k > 0 {
			z := min(k, len(zeros))
			s.vecs = append(s.vecs, zeros[:z])
			k -= z
		}
	}); err != nil {
		s.release()
		return nil, s.release, err
	}
	return s.vecs, s.release, eof
}

// span checks a read of n bytes at off and clips it to the image: the
// bytes to read, and io.EOF as eof when the read reaches the end (as err
// when it starts there, or when n is 0 at the end).
func (im *Image) span(off int64, n int) (_ int, eof, err error) {
	if off < 0 {
		return 0, nil, fmt.Errorf("backup %s: read at negative offset %d", im.name, off)
	}
	if err := im.ctx.Err(); err != nil {
		return 0, nil, fmt.Errorf("backup %s: image is closed", im.name)
	}
	size := im.m.Size
	if off >= size {
		return 0, nil, io.EOF
	}
	if int64(n) > size-off {
		n, eof = int(size-off), io.EOF
	}
	if n == 0 {
		return 0, nil, eof
	}
	return n, eof, nil
}

// each visits the n (> 0) bytes at off chunk by chunk, in order: put gets
// the offset within the read, the length k, and the chunk's k bytes and
// its cache entry, held for put to release (nil, nil for a zero chunk).
// It queues read-ahead for sequential readers, and returns the bytes
// visited and an error naming the backup and chunk.
func (im *Image) each(off int64, n int, put func(done, k int, b []byte, e *cacheEntry)) (int, error) {
	cs := int64(im.m.ChunkSize)
	end := off + int64(n)
	first, last := off/cs, (end-1)/cs
	// The window grows with the sequential run, as the kernel's does: two
	// adjacent reads (a loop device reading one small file, with FUSE
	// direct IO) fetch twice their size ahead, a streaming reader soon the
	// whole ReadAhead. A full window on every adjacent pair fetched
	// megabytes nobody read.
	ahead := int64(0)
	if prev := im.lastEnd.Swap(end); off >= prev-cs && off <= prev+cs {
		run := im.run.Add(int64(n))
		ahead = min(int64(im.ra), 2*((run+cs-1)/cs))
	} else {
		im.run.Store(int64(n))
	}
	if last > first || ahead > 0 {
		// The workers fetch this read's later chunks while we fetch the
		// first, and then the read-ahead past its end.
		im.readAhead(first+1, last+1+ahead)
	}
	for done := 0; done < n; {
		pos := off + int64(done)
		i := pos / cs
		within := int(pos % cs)
		k := min(n-done, int(cs)-within)
		c, ok, err := im.chunk(i)
		if err != nil {
			return done, fmt.Errorf("backup %s: manifest segment of the chunk at offset %d: %w", im.name, i*cs, err)
		}
		if !ok {
			put(done, k, nil, nil)
		} else {
			e, err := im.cache.acquire(im.ctx, c.id, im.bufSize, &imageFill{im, c})
			if err == nil && len(e.data) < within+k {
				im.cache.release(e)
				err = fmt.Errorf("chunk %s is %d bytes, the manifest needs %d: %w", c.id, len(e.data), im.m.ChunkLen(i), chunkstore.ErrCorrupt)
			}
			if err != nil {
				return done, fmt.Errorf("backup %s: chunk at offset %d: %w", im.name, i*cs, err)
			}
			put(done, k, e.data[within:within+k], e)
		}
		done += k
	}
	return n, nil
}

// imageFill fills the cache with one chunk of an image.
type imageFill struct {
	im *Image
	c  chunkRef
}

// fill reads the chunk into buf for the cache.
func (f *imageFill) fill(id chunkstore.ID, buf []byte) ([]byte, error) {
	im := f.im
	loc := f.c.loc
	if !f.c.hasLoc {
		var err error
		if loc, err = im.loc.Locate(im.ctx, id); err != nil {
			return nil, fmt.Errorf("locating chunk %s: %w", id, err)
		}
	}
	data, err := im.s.ReadChunkInto(im.ctx, id, loc, buf)
	if rl, ok := im.loc.(Relocator); ok && err != nil && (errors.Is(err, repo.ErrNotFound) || errors.Is(err, chunkstore.ErrCorrupt)) {
		nloc, rerr := rl.Relocate(im.ctx, id, loc, err)
		if rerr != nil {
			return nil, fmt.Errorf("%w (looking for another copy: %v)", err, rerr)
		}
		return im.s.ReadChunkInto(im.ctx, id, nloc, buf)
	}
	return data, err
}

// readAhead queues chunks [next, end) not queued yet. Queueing never
// blocks: when the workers are saturated, chunks are skipped and the reader
// fetches them itself.
func (im *Image) readAhead(next, end int64) {
	end = min(end, im.m.Chunks())
	var start int64
	for {
		s := im.scheduled.Load()
		start = next
		if s > next && s <= end {
			start = s
		}
		if start >= end {
			return
		}
		if im.scheduled.CompareAndSwap(s, end) {
			break
		}
	}
	im.startOnce.Do(func() {
		w := maxReadAheadWorkers
		im.wg.Add(w)
		for range w {
			go im.prefetcher()
		}
	})
	for i := start; i < end; i++ {
		c, ok, err := im.chunk(i)
		if err != nil || !ok || im.cache.Contains(c.id) {
			continue // a segment error is left for the reader, who reports it
		}
		select {
		case im.prefetch <- c:
		default:
			return
		}
	}
}

func (im *Image) prefetcher() {
	defer im.wg.Done()
	for {
		select {
		case <-im.ctx.Done():
			return
		case c := <-im.prefetch:
			// Errors are left for the reader, who reports them with context.
			if e, err := im.cache.acquire(im.ctx, c.id, im.bufSize, &imageFill{im, c}); err == nil {
				im.cache.release(e)
			}
		}
	}
}

// Close stops read-ahead. Reads after Close fail.
func (im *Image) Close() error {
	im.cancel()
	im.wg.Wait()
	return nil
}

var _ io.ReaderAt = (*Image)(nil)

// segmentCache keeps the last few decoded segments of an image; concurrent
// misses on one slot load it once. Errors are not kept.
type segmentCache struct {
	load func(slot int) (*located, error)
	max  int

	mu    sync.Mutex
	items map[int]*segEntry
	lru   list.List // of *segEntry, front = most recent
}

type segEntry struct {
	slot int
	g    *located
	err  error
	done chan struct{}
	elem *list.Element
}

func newSegmentCache(n int, load func(int) (*located, error)) *segmentCache {
	return &segmentCache{load: load, max: n, items: map[int]*segEntry{}}
}

func (c *segmentCache) get(slot int) (*located, error) {
	c.mu.Lock()
	if e, ok := c.items[slot]; ok {
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
			c.mu.Unlock()
			return e.g, nil
		}
		c.mu.Unlock()
		<-e.done
		return e.g, e.err
	}
	e := &segEntry{slot: slot, done: make(chan struct{})}
	c.items[slot] = e
	c.mu.Unlock()

	e.g, e.err = c.load(slot)

	c.mu.Lock()
	if e.err != nil {
		delete(c.items, slot)
	} else {
		e.elem = c.lru.PushFront(e)
		for c.lru.Len() > c.max {
			old := c.lru.Remove(c.lru.Back()).(*segEntry)
			delete(c.items, old.slot)
		}
	}
	c.mu.Unlock()
	close(e.done)
	return e.g, e.err
}
