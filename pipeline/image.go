package pipeline

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"unsafe"

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
	segs    *segLRU[int]  // this image's last few segments, by slot
	shared  *SegmentCache // nil: segments are located for this image only
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
	// Located, when set, is shared by the images of one mount: segments
	// located by one are reused by the next that reads them.
	Located *SegmentCache
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
	im := &Image{s: s, m: m, backup: backupID, loc: loc, cache: c, shared: opt.Located, name: name, ra: ra,
		bufSize: bufSize, ctx: ctx, cancel: cancel, prefetch: make(chan chunkRef, 2*ra+64)}
	segs := opt.Segments
	if segs <= 0 {
		segs = 4
	}
	im.segs = &segLRU[int]{maxEntries: max(segs, 2), items: map[int]*segEntry[int]{}}
	return im
}

func (im *Image) Size() int64 { return im.m.Size }

// loadSegment reads and verifies the segment of slot (nil: all zeros),
// located at once when the locator can, or takes it from the shared
// cache.
func (im *Image) loadSegment(slot int) (*located, error) {
	k, ok := im.m.Find(slot)
	if !ok {
		return nil, nil
	}
	if im.shared == nil {
		return im.locateSegment(k, segKey{})
	}
	first, _ := im.m.SlotRange(slot)
	key := segKey{s: im.s, digest: im.m.Segments[k].Digest, first: first}
	load := func() (*located, error) { return im.locateSegment(k, key) }
	l, err := im.shared.c.get(key, load)
	if err != nil && errors.Is(err, context.Canceled) && im.ctx.Err() == nil {
		// Another image loaded it and was closed meanwhile.
		l, err = im.shared.c.get(key, load)
	}
	return l, err
}

// locateSegment loads the k-th segment and locates its chunks.
func (im *Image) locateSegment(k int, key segKey) (*located, error) {
	g, err := im.s.LoadSegment(im.ctx, im.backup, im.m, k)
	if err != nil {
		return nil, err
	}
	l := &located{g: g, key: key}
	if sl, ok := im.loc.(SegmentLocator); ok {
		if l.locs, err = sl.LocateSegment(im.ctx, g); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// located is a segment and, when known, its chunks' locations. Never
// changed once cached: a segment whose locations went stale is dropped
// and located again.
type located struct {
	g    *chunkstore.Segment
	locs []chunkstore.Location // by ref-1; nil: ask the Locator per chunk
	key  segKey                // in the shared cache, when there is one
}

// size is about the heap bytes l holds.
func (l *located) size() int64 {
	if l == nil {
		return 0
	}
	return int64(len(l.g.IDs))*int64(unsafe.Sizeof(chunkstore.ID{})) + int64(len(l.g.Refs))*4 +
		int64(len(l.locs))*int64(unsafe.Sizeof(chunkstore.Location{})) + 256
}

// chunkRef is one chunk of an image: its ID and, when known, where it is
// and the located segment that said so (to drop it if it was wrong).
type chunkRef struct {
	id     chunkstore.ID
	loc    chunkstore.Location
	hasLoc bool
	src    *located
	ref    uint32 // index of id in src
}

// chunk returns chunk i, false for a zero chunk.
func (im *Image) chunk(i int64) (chunkRef, bool, error) {
	slot := int(i / int64(im.m.SegmentChunks))
	l, err := im.segs.get(slot, func() (*located, error) { return im.loadSegment(slot) })
	if err != nil || l == nil {
		return chunkRef{}, false, err
	}
	r := l.g.Refs[i-l.g.First]
	if r == 0 {
		return chunkRef{}, false, nil
	}
	c := chunkRef{id: l.g.IDs[r-1], src: l, ref: r - 1}
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

// fill reads the chunk into buf for the cache. When the chunk is not
// where its segment said (a GC moved it since), the segment is located
// again, here and in the shared cache, so the chunks that moved with it
// are found without a miss each; what is still not found is left to the
// Relocator.
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
	if !moved(err) {
		return data, err
	}
	if nloc, ok := im.relocated(f.c); ok && nloc != loc {
		loc = nloc
		if data, err = im.s.ReadChunkInto(im.ctx, id, loc, buf); !moved(err) {
			return data, err
		}
	}
	if rl, ok := im.loc.(Relocator); ok {
		nloc, rerr := rl.Relocate(im.ctx, id, loc, err)
		if rerr != nil {
			return nil, fmt.Errorf("%w (looking for another copy: %v)", err, rerr)
		}
		return im.s.ReadChunkInto(im.ctx, id, nloc, buf)
	}
	return data, err
}

// moved is whether a chunk read failed in a way another location may fix.
func moved(err error) bool {
	return err != nil && (errors.Is(err, repo.ErrNotFound) || errors.Is(err, chunkstore.ErrCorrupt))
}

// relocated drops the located segment c came from, its location having
// failed, from this image's and the shared cache (unless another reader
// did already), and returns c's location in the segment as located now.
// A reader that got c from the old segment then finds the new one.
func (im *Image) relocated(c chunkRef) (chunkstore.Location, bool) {
	if c.src == nil || c.src.locs == nil {
		return chunkstore.Location{}, false
	}
	slot := c.src.g.Slot
	im.segs.drop(slot, c.src)
	if im.shared != nil {
		im.shared.c.drop(c.src.key, c.src)
	}
	l, err := im.segs.get(slot, func() (*located, error) { return im.loadSegment(slot) })
	if err != nil || l == nil || l.locs == nil || int(c.ref) >= len(l.locs) || l.g.IDs[c.ref] != c.id {
		return chunkstore.Location{}, false
	}
	return l.locs[c.ref], l.locs[c.ref].Length != 0
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

// SegmentCache keeps located manifest segments (decoded, with their
// chunks' locations) for all the images of one mount, up to a number of
// bytes whatever the volumes' sizes: re-opening an image (one dd per
// piece of a backup) or opening a backup sharing segments with another
// (an incremental's unchanged GiBs) reuses them instead of loading and
// locating them again (16384 catalog lookups for a dense GiB). Entries
// are keyed by the segment's digest, which names its content, in one
// repository. Safe for concurrent use.
type SegmentCache struct {
	c *segLRU[segKey]
}

// NewSegmentCache makes a cache of about maxBytes of located segments (a
// dense segment is ~1.3 MiB); it keeps at least the latest one.
func NewSegmentCache(maxBytes int64) *SegmentCache {
	return &SegmentCache{c: &segLRU[segKey]{maxBytes: maxBytes, items: map[segKey]*segEntry[segKey]{}}}
}

// Stats returns how many segments were found cached (hits) and how many
// were loaded (misses).
func (c *SegmentCache) Stats() (hits, misses uint64) {
	c.c.mu.Lock()
	defer c.c.mu.Unlock()
	return c.c.hits, c.c.misses
}

// segKey names a located segment: its content in one repository.
type segKey struct {
	s      *chunkstore.Store
	digest chunkstore.ID
	first  int64
}

// segLRU keeps recent located segments, up to maxEntries (0: any) and
// maxBytes (0: any); concurrent misses on one key load it once. Errors
// are not kept.
type segLRU[K comparable] struct {
	maxEntries int
	maxBytes   int64

	mu           sync.Mutex
	items        map[K]*segEntry[K]
	lru          list.List // of *segEntry, front = most recent
	bytes        int64
	hits, misses uint64
}

type segEntry[K comparable] struct {
	key  K
	l    *located
	err  error
	done chan struct{}
	elem *list.Element
}

func (c *segLRU[K]) get(k K, load func() (*located, error)) (*located, error) {
	c.mu.Lock()
	if e, ok := c.items[k]; ok {
		c.hits++
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
			c.mu.Unlock()
			return e.l, nil
		}
		c.mu.Unlock()
		<-e.done
		return e.l, e.err
	}
	c.misses++
	e := &segEntry[K]{key: k, done: make(chan struct{})}
	c.items[k] = e
	c.mu.Unlock()

	e.l, e.err = load()

	c.mu.Lock()
	if e.err != nil {
		delete(c.items, k)
	} else {
		e.elem = c.lru.PushFront(e)
		c.bytes += e.l.size()
		for c.lru.Len() > 1 && (c.maxEntries > 0 && c.lru.Len() > c.maxEntries || c.maxBytes > 0 && c.bytes > c.maxBytes) {
			c.remove(c.lru.Back().Value.(*segEntry[K]))
		}
	}
	c.mu.Unlock()
	close(e.done)
	return e.l, e.err
}

// drop forgets k if it still holds l.
func (c *segLRU[K]) drop(k K, l *located) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok && e.elem != nil && e.l == l {
		c.remove(e)
	}
}

func (c *segLRU[K]) remove(e *segEntry[K]) {
	c.lru.Remove(e.elem)
	delete(c.items, e.key)
	c.bytes -= e.l.size()
}
