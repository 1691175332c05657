package chunkstore

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// Locator finds where a chunk is stored (implemented over the catalog).
type Locator interface {
	Locate(ctx context.Context, id ID) (Location, error)
}

// maxReadAheadWorkers bounds the goroutines an image uses for read-ahead.
const maxReadAheadWorkers = 8

// Image is a read-only view of one backup: io.ReaderAt over the manifest,
// with verified, cached chunk reads and parallel read-ahead for sequential
// readers. Safe for concurrent use.
type Image struct {
	s      *Store
	m      *Manifest
	loc    Locator
	cache  *Cache
	name   string
	ra     int
	ctx    context.Context
	cancel context.CancelFunc

	lastEnd   atomic.Int64 // end of the previous read, to spot sequential readers
	scheduled atomic.Int64 // read-ahead was queued for chunks below this index
	prefetch  chan int
	startOnce sync.Once
	wg        sync.WaitGroup
}

// ImageOptions tune reads.
type ImageOptions struct {
	Cache     *Cache // shared; nil = a small private one
	ReadAhead int    // chunks fetched ahead of a sequential reader
	Name      string // backup id, for error messages
}

// OpenImage opens a view of the backup described by m. The cache should
// hold several times ReadAhead chunks, or read-ahead is evicted unused.
func (s *Store) OpenImage(m *Manifest, loc Locator, opt ImageOptions) *Image {
	ra := max(opt.ReadAhead, 0)
	c := opt.Cache
	if c == nil {
		c = NewCache(max(32<<20, int64(2*(ra+4)*m.ChunkSize)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	im := &Image{s: s, m: m, loc: loc, cache: c, name: opt.Name, ra: ra, ctx: ctx, cancel: cancel}
	if ra > 0 {
		im.prefetch = make(chan int, 2*ra+32)
	}
	return im
}

func (im *Image) Size() int64 { return im.m.Size }

// ReadAt reads len(p) bytes at off. Zero chunks cost no I/O. Errors name
// the backup and the offset of the chunk that failed.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("backup %s: read at negative offset %d", im.name, off)
	}
	if err := im.ctx.Err(); err != nil {
		return 0, fmt.Errorf("backup %s: image is closed", im.name)
	}
	size := im.m.Size
	if off >= size {
		return 0, io.EOF
	}
	n := len(p)
	var eof error
	if int64(n) > size-off {
		n, eof = int(size-off), io.EOF
	}
	if n == 0 {
		return 0, eof
	}
	cs := int64(im.m.ChunkSize)
	end := off + int64(n)
	if prev := im.lastEnd.Swap(end); im.ra > 0 && off >= prev-cs && off <= prev+cs {
		// Queue this read's later chunks too, so a large read is fetched
		// in parallel, then ReadAhead chunks past its end.
		im.readAhead(int(off/cs)+1, int((end-1)/cs)+1+im.ra)
	}
	for done := 0; done < n; {
		pos := off + int64(done)
		i := int(pos / cs)
		within := int(pos % cs)
		k := min(n-done, int(cs)-within)
		id, ok := im.m.Chunk(i)
		if !ok {
			clear(p[done : done+k])
		} else {
			data, err := im.chunk(im.ctx, i, id)
			if err == nil && len(data) < within+k {
				err = corruptf("chunk %s is %d bytes, the manifest needs %d", id, len(data), im.m.ChunkLen(i))
			}
			if err != nil {
				return done, fmt.Errorf("backup %s: chunk at offset %d: %w", im.name, int64(i)*cs, err)
			}
			copy(p[done:done+k], data[within:])
		}
		done += k
	}
	return n, eof
}

// chunk returns chunk i's decoded bytes through the cache.
func (im *Image) chunk(ctx context.Context, i int, id ID) ([]byte, error) {
	return im.cache.get(ctx, id, func() ([]byte, error) {
		loc, err := im.loc.Locate(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("locating chunk %s: %w", id, err)
		}
		return im.s.ReadChunk(ctx, id, loc, nil)
	})
}

// readAhead queues chunks [next, end) not queued yet. Queueing never
// blocks: when the workers are saturated, chunks are skipped and the reader
// fetches them itself.
func (im *Image) readAhead(next, end int) {
	end = min(end, im.m.Chunks())
	var start int
	for {
		s := im.scheduled.Load()
		start = next
		if s > int64(next) && s <= int64(end) {
			start = int(s)
		}
		if start >= end {
			return
		}
		if im.scheduled.CompareAndSwap(s, int64(end)) {
			break
		}
	}
	im.startOnce.Do(func() {
		w := min(im.ra, maxReadAheadWorkers)
		im.wg.Add(w)
		for range w {
			go im.prefetcher()
		}
	})
	for i := start; i < end; i++ {
		id, ok := im.m.Chunk(i)
		if !ok || im.cache.Contains(id) {
			continue
		}
		select {
		case im.prefetch <- i:
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
		case i := <-im.prefetch:
			id, _ := im.m.Chunk(i)
			// Errors are left for the reader, who reports them with context.
			_, _ = im.chunk(im.ctx, i, id)
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
