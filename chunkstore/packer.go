package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// scratchBufs hold a blob while it is compressed outside the packer's lock.
var scratchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10+64); return &b }}

// openPack is a pack being filled or uploaded. seq numbers packs in the
// order they were opened, from 1.
type openPack struct {
	seq     uint64
	buf     *[]byte
	entries []PackEntry
	shared  bool // it holds a token of the shared slots, not the packer's own
}

// PackSlots are pack buffers several packers share beyond each one's own:
// a token per buffer in use, and the buffers of free slots kept for the
// next pack. Buffers are kept, not pooled: a sync.Pool is emptied by every
// GC, and a backup whose heap sits near the soft memory limit (a large
// catalog's compactions) collects every few MiB, so it allocated, zeroed
// and faulted in a new 8 MiB buffer for most packs (a W9 heap profile:
// 304 MB of pack buffers allocated by mid-backup).
type PackSlots struct {
	tokens chan struct{}
	free   chan *[]byte
}

// NewPackSlots makes n shared slots.
func NewPackSlots(n int) *PackSlots {
	return &PackSlots{tokens: make(chan struct{}, n), free: make(chan *[]byte, n)}
}

// Drain lets the kept buffers go (when no packer is running).
func (s *PackSlots) Drain() {
	for {
		select {
		case <-s.free:
		default:
			return
		}
	}
}

// InUse is how many slots packers hold; Kept how many buffers wait for
// the next pack.
func (s *PackSlots) InUse() int { return len(s.tokens) }
func (s *PackSlots) Kept() int  { return len(s.free) }

// takeBuf is a kept buffer, or a new one (made).
func takeBuf(free chan *[]byte) (buf *[]byte, made bool) {
	select {
	case b := <-free:
		return b, false
	default:
		b := make([]byte, 0, packTarget)
		return &b, true
	}
}

// keep keeps buf for the next pack, or lets it go when enough are kept.
func keep(free chan *[]byte, buf *[]byte) {
	select {
	case free <- buf:
	default:
	}
}

// CommitFunc records the entries of a pack that is durable (in the
// catalog, for a backup). The packer calls it from its uploaders, one call
// per pack, and counts the pack committed only once it returned nil.
type CommitFunc func(ctx context.Context, pack ID, entries []PackEntry) error

// Packer assembles compressed blobs into packs, uploads full packs in the
// background and commits each pack's entries as soon as the pack is
// durable, so its memory is the packs in flight, whatever the volume size.
// Add is safe for concurrent use and compresses in the caller's goroutine.
// At most `uploaders` packs are uploading and one is filling at any time;
// Add blocks while uploads lag.
//
// Every pack gets a sequence number when it is opened; Add returns the one
// holding the chunk, and Sync(seq) waits until every pack up to seq is
// committed. A backup uses that to count references to new chunks only
// once they are in the catalog.
type Packer struct {
	s      *Store
	comp   Compression
	ctx    context.Context
	cancel context.CancelFunc
	commit CommitFunc

	own     chan struct{}  // the packer's own buffer token: its filling pack never waits on others
	ownBuf  chan *[]byte   // the buffer of that token while no pack holds it
	slots   *PackSlots     // more buffers, maybe shared with other packers
	uploads chan *openPack // sealed packs waiting for an uploader
	wg      sync.WaitGroup

	mu      sync.Mutex // guards the filling pack; held while Add waits for a buffer
	cur     *openPack
	nextSeq uint64
	closed  bool
	made    int // pack buffers allocated (the tests check they are reused)

	pmu     sync.Mutex    // guards pending (taken under mu, or alone by uploaders)
	pending map[ID]uint64 // chunk -> pack holding it, until that pack is committed

	cmu       sync.Mutex
	committed map[uint64]bool // committed packs above the watermark
	watermark uint64          // every pack up to this one is committed
	advanced  chan struct{}   // closed (and replaced) when the watermark moves

	failed  chan struct{}
	failOne sync.Once
	err     error // first upload or commit error, set before failed closes

	stored   atomic.Int64
	onUpload func(ID) error
}

// OnUpload sets a function the packer calls with each pack's ID while it
// uploads the pack (concurrently, so its latency hides behind the
// upload's); the pack counts as written only once both succeeded, and an
// error fails the packer. A backup records there which packs it wrote, so
// that they can be removed if it fails. Set it before the first Add.
func (p *Packer) OnUpload(fn func(pack ID) error) { p.onUpload = fn }

// PackerOptions configure a packer.
type PackerOptions struct {
	Uploaders int        // packs uploading at once (at least 1)
	Commit    CommitFunc // called with each durable pack's entries; nil: nothing to record
	// Slots, when set, is shared by several packers: one token per pack
	// buffer in use beyond each packer's own, so the backups of a process
	// hold a bounded number of 8 MiB buffers however many run. A packer
	// waits to start a pack for its own buffer or a shared one, whichever
	// frees first; its own is freed by its own upload, which needs nothing
	// from other packers, so sharing cannot deadlock (a filling pack may
	// wait for data that other backups' buffers hold). nil: Uploaders.
	Slots *PackSlots
}

// NewPacker starts a packer writing to s.
func (s *Store) NewPacker(ctx context.Context, comp Compression, opt PackerOptions) *Packer {
	uploaders := max(opt.Uploaders, 1)
	slots := opt.Slots
	if slots == nil {
		slots = NewPackSlots(uploaders)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Packer{
		s: s, comp: comp, ctx: ctx, cancel: cancel, commit: opt.Commit,
		own:       make(chan struct{}, 1),
		ownBuf:    make(chan *[]byte, 1),
		slots:     slots,
		uploads:   make(chan *openPack, 1+cap(slots.tokens)),
		pending:   map[ID]uint64{},
		committed: map[uint64]bool{},
		advanced:  make(chan struct{}),
		failed:    make(chan struct{}),
	}
	p.wg.Add(uploaders)
	for range uploaders {
		go p.uploader()
	}
	return p
}

func (p *Packer) fail(err error) {
	p.failOne.Do(func() {
		p.err = err
		close(p.failed)
	})
}

func (p *Packer) firstErr() error {
	select {
	case <-p.failed:
		return p.err
	default:
		return nil
	}
}

// Stored is the bytes of blobs added so far.
func (p *Packer) Stored() int64 { return p.stored.Load() }

// Add compresses raw and appends it to the current pack; raw may be reused
// once Add returns. It returns the pack holding id and the stored
// (compressed) size, 0 when a pack not yet committed already holds id. An
// upload or commit error is returned by the next Add.
func (p *Packer) Add(id ID, raw []byte) (seq uint64, stored int, err error) {
	if len(raw) > MaxChunkSize {
		return 0, 0, fmt.Errorf("chunk %s is %d bytes, more than the maximum chunk size %d", id, len(raw), MaxChunkSize)
	}
	if seq, dup := p.Pending(id); dup {
		return seq, 0, nil
	}
	// Compressed outside the lock; a chunk added twice at once is
	// compressed twice and stored once.
	sp := scratchBufs.Get().(*[]byte)
	defer scratchBufs.Put(sp)
	var codec Codec
	*sp, codec = p.Encode((*sp)[:0], id, raw)
	return p.AddBlob(id, len(raw), codec, *sp)
}

// Encode appends the stored form of chunk id's bytes raw to dst: its
// blob, compressed as the packer stores it, sealed in an encrypted
// repository. It returns it with the blob's codec. It is the CPU half of
// Add, for callers that compress and seal on a CPU budget and then
// AddBlob, which may wait for a pack buffer, without it.
func (p *Packer) Encode(dst []byte, id ID, raw []byte) ([]byte, Codec) {
	if !p.s.Encrypted() {
		blob := EncodeBlob(dst, raw, p.comp)
		return blob, Codec(blob[0])
	}
	sp := scratchBufs.Get().(*[]byte)
	defer scratchBufs.Put(sp)
	blob := EncodeBlob((*sp)[:0], raw, p.comp)
	*sp = blob
	return p.s.sealBlob(dst, blob, id), Codec(blob[0])
}

// Pending returns the pack holding id when a pack not committed yet holds it.
func (p *Packer) Pending(id ID) (uint64, bool) { return p.pendingSeq(id) }

// AddBlob appends a blob made by Encode from a rawLen-byte chunk (see Add);
// blob may be reused once AddBlob returns.
func (p *Packer) AddBlob(id ID, rawLen int, codec Codec, blob []byte) (seq uint64, stored int, err error) {
	if err := p.s.ready(); err != nil {
		return 0, 0, err
	}
	if len(blob) < blobHeaderSize+p.s.blobOverhead() || rawLen > MaxChunkSize {
		return 0, 0, fmt.Errorf("chunk %s: a blob of %d bytes for %d raw bytes is no blob (a bug: report it)", id, len(blob), rawLen)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.firstErr(); err != nil {
		return 0, 0, err
	}
	if p.closed {
		return 0, 0, errors.New("chunkstore: Add on a closed packer")
	}
	if seq, dup := p.pendingSeq(id); dup {
		return seq, 0, nil
	}
	if p.cur != nil && len(*p.cur.buf)+len(blob)+(len(p.cur.entries)+1)*packEntrySize+packFooterSize+p.s.blobOverhead() > p.s.packSize() {
		p.sealLocked()
	}
	if p.cur == nil {
		// Waiting here under mu is the backpressure: every Add waits
		// until an uploader frees a buffer.
		shared := false
		select {
		case p.own <- struct{}{}:
		default:
			select {
			case p.own <- struct{}{}:
			case p.slots.tokens <- struct{}{}:
				shared = true
			case <-p.failed:
				return 0, 0, p.err
			case <-p.ctx.Done():
				return 0, 0, fmt.Errorf("adding chunk %s: %w", id, context.Cause(p.ctx))
			}
		}
		free := p.ownBuf
		if shared {
			free = p.slots.free
		}
		buf, made := takeBuf(free)
		if made {
			p.made++
		}
		*buf = append((*buf)[:0], p.s.packMagicOf()...)
		p.nextSeq++
		p.cur = &openPack{seq: p.nextSeq, buf: buf, shared: shared}
	}
	b := *p.cur.buf
	p.cur.entries = append(p.cur.entries, PackEntry{ID: id, Location: Location{
		Offset:    uint32(len(b)),
		Length:    uint32(len(blob)),
		RawLength: uint32(rawLen),
		Codec:     codec,
	}})
	*p.cur.buf = append(b, blob...)
	p.pmu.Lock()
	p.pending[id] = p.cur.seq
	p.pmu.Unlock()
	p.stored.Add(int64(len(blob)))
	return p.cur.seq, len(blob), nil
}

func (p *Packer) pendingSeq(id ID) (uint64, bool) {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	seq, ok := p.pending[id]
	return seq, ok
}

// sealLocked hands the current pack to the uploaders. It never blocks: the
// uploads channel has room for every buffer the tokens allow.
func (p *Packer) sealLocked() {
	p.uploads <- p.cur
	p.cur = nil
}

// Sync waits until every pack up to seq is durable and committed, sealing
// the pack being filled first when it is one of them. Sync(0) returns at
// once.
func (p *Packer) Sync(ctx context.Context, seq uint64) error {
	p.mu.Lock()
	if p.cur != nil && p.cur.seq <= seq && !p.closed {
		p.sealLocked()
	}
	p.mu.Unlock()
	for {
		p.cmu.Lock()
		done, advanced := p.watermark >= seq, p.advanced
		p.cmu.Unlock()
		if done {
			return nil
		}
		select {
		case <-advanced:
		case <-p.failed:
			return p.err
		case <-p.ctx.Done():
			return fmt.Errorf("writing packs: %w", context.Cause(p.ctx))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (p *Packer) uploader() {
	defer p.wg.Done()
	for op := range p.uploads {
		p.upload(op)
		p.release(op)
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
		if p.ctx.Err() != nil {
			err = context.Cause(p.ctx) // say why it was cancelled
		}
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
	if p.commit != nil {
		if err := p.commit(p.ctx, id, op.entries); err != nil {
			p.fail(fmt.Errorf("committing pack %s (%d chunks): %w", id, len(op.entries), err))
			return
		}
	}
	p.pmu.Lock()
	for _, e := range op.entries {
		if p.pending[e.ID] == op.seq {
			delete(p.pending, e.ID)
		}
	}
	p.pmu.Unlock()
	p.cmu.Lock()
	p.committed[op.seq] = true
	for p.committed[p.watermark+1] {
		delete(p.committed, p.watermark+1)
		p.watermark++
	}
	close(p.advanced)
	p.advanced = make(chan struct{})
	p.cmu.Unlock()
}

// release keeps a pack's buffer for the next pack holding its token and
// gives the token back.
func (p *Packer) release(op *openPack) {
	if op.shared {
		keep(p.slots.free, op.buf)
		<-p.slots.tokens
	} else {
		keep(p.ownBuf, op.buf)
		<-p.own
	}
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
			p.release(p.cur)
			p.cur = nil
		}
	}
	close(p.uploads)
	p.mu.Unlock()
	p.wg.Wait()
}

// Close flushes the last pack and waits until every pack is durable and
// committed. After an error what was written may be uncommitted; those
// packs are garbage for GC.
func (p *Packer) Close() error {
	p.finish(true)
	defer p.cancel()
	if err := p.firstErr(); err != nil {
		return err
	}
	if p.ctx.Err() != nil {
		return fmt.Errorf("writing packs: %w", context.Cause(p.ctx))
	}
	return nil
}

// Abort stops uploading and discards what is buffered.
func (p *Packer) Abort() {
	p.cancel()
	p.finish(false)
}
