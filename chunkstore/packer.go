package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// packBufs recycles pack buffers across packers so a steady stream of
// backups does not allocate 8 MiB per pack.
var packBufs = sync.Pool{New: func() any { b := make([]byte, 0, packTarget); return &b }}

// scratchBufs hold a blob while it is compressed outside the packer's lock.
var scratchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10+64); return &b }}

// openPack is a pack being filled or uploaded.
type openPack struct {
	buf     *[]byte
	entries []PackEntry
}

// Packer assembles compressed blobs into packs and uploads full packs in the
// background. Add is safe for concurrent use and compresses in the caller's
// goroutine. At most `uploaders` packs are uploading and one is filling at
// any time; Add blocks while uploads lag.
type Packer struct {
	s      *Store
	comp   Compression
	ctx    context.Context
	cancel context.CancelFunc

	slots   chan struct{}  // one token per pack buffer in use
	uploads chan *openPack // sealed packs waiting for an uploader
	wg      sync.WaitGroup

	mu     sync.Mutex
	cur    *openPack
	seen   map[ID]struct{}
	closed bool

	resMu   sync.Mutex
	err     error       // first upload error
	done    []PackEntry // entries of durable packs
	failed  chan struct{}
	failOne sync.Once

	onUpload func(ID) error
}

// OnUpload sets a function the packer calls with each pack's ID while it
// uploads the pack (concurrently, so its latency hides behind the
// upload's); the pack counts as written only once both succeeded, and an
// error fails the packer. A backup records there which packs it wrote, so
// that they can be removed if it fails. Set it before the first Add.
func (p *Packer) OnUpload(fn func(pack ID) error) { p.onUpload = fn }

// NewPacker starts a packer writing to s; uploads run on `uploaders` goroutines.
func (s *Store) NewPacker(ctx context.Context, comp Compression, uploaders int) *Packer {
	uploaders = max(uploaders, 1)
	ctx, cancel := context.WithCancel(ctx)
	p := &Packer{
		s: s, comp: comp, ctx: ctx, cancel: cancel,
		slots:   make(chan struct{}, uploaders+1),
		uploads: make(chan *openPack, uploaders+1),
		seen:    map[ID]struct{}{},
		failed:  make(chan struct{}),
	}
	p.wg.Add(uploaders)
	for range uploaders {
		go p.uploader()
	}
	return p
}

func (p *Packer) fail(err error) {
	p.failOne.Do(func() {
		p.resMu.Lock()
		p.err = err
		p.resMu.Unlock()
		close(p.failed)
	})
}

func (p *Packer) firstErr() error {
	p.resMu.Lock()
	defer p.resMu.Unlock()
	return p.err
}

// Add compresses raw and appends it to the current pack; raw may be reused
// once Add returns. It returns the stored (compressed) size, or 0 when this
// packer already holds id. An upload error is returned by the next Add.
func (p *Packer) Add(id ID, raw []byte) (stored int, err error) {
	if len(raw) > MaxChunkSize {
		return 0, fmt.Errorf("chunk %s is %d bytes, more than the maximum chunk size %d", id, len(raw), MaxChunkSize)
	}
	if err := p.s.ready(); err != nil {
		return 0, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, errors.New("chunkstore: Add on a closed packer")
	}
	if _, dup := p.seen[id]; dup {
		p.mu.Unlock()
		return 0, nil
	}
	p.seen[id] = struct{}{}
	p.mu.Unlock()

	sp := scratchBufs.Get().(*[]byte)
	defer scratchBufs.Put(sp)
	blob := EncodeBlob((*sp)[:0], raw, p.comp)
	*sp = blob
	codec := Codec(blob[0])
	if p.s.Encrypted() {
		// Sealed outside the lock too, so workers encrypt in parallel.
		cp := scratchBufs.Get().(*[]byte)
		defer scratchBufs.Put(cp)
		blob = p.s.sealBlob((*cp)[:0], blob, id)
		*cp = blob
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.firstErr(); err != nil {
		return 0, err
	}
	if p.closed {
		return 0, errors.New("chunkstore: Add on a closed packer")
	}
	if p.cur != nil && len(*p.cur.buf)+len(blob)+(len(p.cur.entries)+1)*packEntrySize+packFooterSize+p.s.blobOverhead() > p.s.packSize() {
		p.sealLocked()
	}
	if p.cur == nil {
		// Waiting here under mu is the backpressure: every Add waits
		// until an uploader frees a buffer.
		select {
		case p.slots <- struct{}{}:
		case <-p.failed:
			return 0, p.firstErr()
		case <-p.ctx.Done():
			return 0, fmt.Errorf("adding chunk %s: %w", id, p.ctx.Err())
		}
		buf := packBufs.Get().(*[]byte)
		*buf = append((*buf)[:0], p.s.packMagicOf()...)
		p.cur = &openPack{buf: buf}
	}
	b := *p.cur.buf
	p.cur.entries = append(p.cur.entries, PackEntry{ID: id, Location: Location{
		Offset:    uint32(len(b)),
		Length:    uint32(len(blob)),
		RawLength: uint32(len(raw)),
		Codec:     codec,
	}})
	*p.cur.buf = append(b, blob...)
	return len(blob), nil
}

// sealLocked hands the current pack to the uploaders. It never blocks: the
// uploads channel has room for every buffer a slot allows.
func (p *Packer) sealLocked() {
	p.uploads <- p.cur
	p.cur = nil
}

func (p *Packer) uploader() {
	defer p.wg.Done()
	for op := range p.uploads {
		p.upload(op)
		packBufs.Put(op.buf)
		<-p.slots
	}
}

func (p *Packer) upload(op *openPack) {
	if p.firstErr() != nil || p.ctx.Err() != nil {
		return // the packer failed or was aborted: drop the pack
	}
	*op.buf = p.s.appendTrailer(*op.buf, op.entries)
	id := Sum(*op.buf)
	recorded := make(chan error, 1)
	if p.onUpload != nil {
		go func() { recorded <- p.onUpload(id) }()
	} else {
		recorded <- nil
	}
	if err := p.s.be.Put(p.ctx, packName(id), *op.buf); err != nil {
		<-recorded
		p.fail(fmt.Errorf("uploading pack %s (%d chunks, %d bytes): %w", id, len(op.entries), len(*op.buf), err))
		return
	}
	if err := <-recorded; err != nil {
		p.fail(fmt.Errorf("recording pack %s: %w", id, err))
		return
	}
	for i := range op.entries {
		op.entries[i].Pack = id
	}
	p.resMu.Lock()
	p.done = append(p.done, op.entries...)
	p.resMu.Unlock()
}

// finish stops accepting chunks, seals the last pack when flush is set, and
// waits for the uploaders.
func (p *Packer) finish(flush bool) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.cur != nil {
		if flush && len(p.cur.entries) > 0 {
			p.sealLocked()
		} else {
			packBufs.Put(p.cur.buf)
			<-p.slots
			p.cur = nil
		}
	}
	close(p.uploads)
	p.mu.Unlock()
	p.wg.Wait()
}

// Close flushes the last pack, waits until every pack is durable and
// returns the entries of all packs written. After an error nothing written
// is referenced and the packs become garbage for GC.
func (p *Packer) Close() ([]PackEntry, error) {
	p.finish(true)
	defer p.cancel()
	if err := p.firstErr(); err != nil {
		return nil, err
	}
	if err := p.ctx.Err(); err != nil {
		return nil, fmt.Errorf("writing packs: %w", err)
	}
	p.resMu.Lock()
	defer p.resMu.Unlock()
	return p.done, nil
}

// Abort stops uploading and discards what is buffered.
func (p *Packer) Abort() {
	p.cancel()
	p.finish(false)
}
