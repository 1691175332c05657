package chunkstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/volback/volback/drivers/repo"
)

// Locator finds where a chunk is stored (implemented over the catalog).
type Locator interface {
	Locate(ctx context.Context, id ID) (Location, error)
}

// Relocator is a Locator that can look again when a chunk was not where
// Locate said (garbage collection moved it since) or was found corrupt.
// It returns the new location, or an error when there is none (it may
// then record the chunk as lost). Images call it once per failed read.
type Relocator interface {
	Relocate(ctx context.Context, id ID, old Location, cause error) (Location, error)
}

// maxReadAheadWorkers is the goroutines an image fetches chunks with
// besides the reader: enough to keep several preads in flight on a cold
// repository while the cores decode and verify.
const maxReadAheadWorkers = 8

// zstdSlack is spare room past a decoded chunk in its buffer: with it the
// zstd decoder uses its fast whole-block copies instead of the exact ones.
const zstdSlack = 64

// Image is a read-only view of one backup: io.ReaderAt over the manifest,
// with verified, cached chunk reads, the chunks of one read fetched in
// parallel, and read-ahead for sequential readers. Safe for concurrent use.
type Image struct {
	s       *Store
	m       *Manifest
	loc     Locator
	cache   *Cache
	name    string
	ra      int
	bufSize int // cache buffer size for one chunk of this image
	ctx     context.Context
	cancel  context.CancelFunc

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
	// Room for a whole raw blob (header included) or a decoded chunk plus
	// zstdSlack, rounded to the runtime's 8 KiB pages so the cache counts
	// what the buffer really occupies.
	bufSize := (blobHeaderSize + s.blobOverhead() + max(m.ChunkSize, 0) + zstdSlack + 8<<10 - 1) &^ (8<<10 - 1)
	return &Image{s: s, m: m, loc: loc, cache: c, name: opt.Name, ra: ra, bufSize: bufSize,
		ctx: ctx, cancel: cancel, prefetch: make(chan int, 2*ra+64)}
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
	first, last := int(off/cs), int((end-1)/cs)
	ahead := 0
	if prev := im.lastEnd.Swap(end); off >= prev-cs && off <= prev+cs {
		ahead = im.ra
	}
	if last > first || ahead > 0 {
		// The workers fetch this read's later chunks while we fetch the
		// first, and then the read-ahead past its end.
		im.readAhead(first+1, last+1+ahead)
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
			e, err := im.cache.acquire(im.ctx, id, im.bufSize, im)
			if err == nil && len(e.data) < within+k {
				im.cache.release(e)
				err = corruptf("chunk %s is %d bytes, the manifest needs %d", id, len(e.data), im.m.ChunkLen(i))
			}
			if err != nil {
				return done, fmt.Errorf("backup %s: chunk at offset %d: %w", im.name, int64(i)*cs, err)
			}
			copy(p[done:done+k], e.data[within:])
			im.cache.release(e)
		}
		done += k
	}
	return n, eof
}

// fill reads chunk id into buf for the cache.
func (im *Image) fill(id ID, buf []byte) ([]byte, error) {
	loc, err := im.loc.Locate(im.ctx, id)
	if err != nil {
		return nil, fmt.Errorf("locating chunk %s: %w", id, err)
	}
	data, err := im.s.readChunkInto(im.ctx, id, loc, buf)
	if rl, ok := im.loc.(Relocator); ok && err != nil && (errors.Is(err, repo.ErrNotFound) || errors.Is(err, ErrCorrupt)) {
		nloc, rerr := rl.Relocate(im.ctx, id, loc, err)
		if rerr != nil {
			return nil, fmt.Errorf("%w (looking for another copy: %v)", err, rerr)
		}
		return im.s.readChunkInto(im.ctx, id, nloc, buf)
	}
	return data, err
}

// readChunkInto is ReadChunk for the image's hot path: a raw blob is read
// straight into buf and used in place (no second copy), and a zstd blob is
// decoded into buf with zstdSlack to spare. buf must hold the blob and the
// decoded chunk plus zstdSlack; larger chunks (only a corrupt manifest has
// them) take ReadChunk's path.
func (s *Store) readChunkInto(ctx context.Context, id ID, loc Location, buf []byte) ([]byte, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.checkLocation(loc); err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: bad location: %w", id, loc.Pack, err)
	}
	if int(loc.Length) > len(buf) || int(loc.RawLength)+zstdSlack > len(buf) {
		return s.ReadChunk(ctx, id, loc, nil)
	}
	var blob []byte
	if loc.Codec == CodecRaw {
		blob = buf[:loc.Length]
	} else {
		bp := blobBufs.Get().(*[]byte)
		defer blobBufs.Put(bp)
		if cap(*bp) < int(loc.Length) {
			*bp = make([]byte, loc.Length)
		}
		blob = (*bp)[:loc.Length]
	}
	if err := s.be.ReadAt(ctx, packName(loc.Pack), blob, int64(loc.Offset)); err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
	}
	blob, err := s.openBlob(blob, id) // in place: a raw chunk stays in buf
	if err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
	}
	if len(blob) < blobHeaderSize {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("blob of %d bytes is shorter than its header", len(blob)))
	}
	codec, rawLen := Codec(blob[0]), binary.LittleEndian.Uint32(blob[1:])
	if codec != loc.Codec || rawLen != loc.RawLength {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack,
			corruptf("blob header (codec %d, %d bytes) does not match the catalog location (%s, %d bytes)", uint8(codec), rawLen, loc.Codec, loc.RawLength))
	}
	raw := blob[blobHeaderSize:]
	if codec == CodecZstd {
		out, err := decoder.DecodeAll(raw, buf[:0:int(rawLen)+zstdSlack])
		if err == nil && len(out) != int(rawLen) {
			err = corruptf("zstd blob decodes to %d bytes, header says %d", len(out), rawLen)
		} else if err != nil {
			err = corruptf("zstd blob (raw length %d): %v", rawLen, err)
		}
		if err != nil {
			return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
		}
		raw = out
	}
	if got := s.ChunkID(raw); got != id {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("decoded bytes hash to %s", got))
	}
	return raw, nil
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
		w := maxReadAheadWorkers
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
			if e, err := im.cache.acquire(im.ctx, id, im.bufSize, im); err == nil {
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
