package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/service/failpoint"
)

// Source is the volume a backup reads; ReadAt is safe for concurrent use.
type Source interface {
	ReadAt(p []byte, off int64) (int, error)
}

// Catalog is what a backup asks and tells the catalog. The service
// implements it over the index; tests over a map.
type Catalog interface {
	// Stored reports whether chunk id is stored (and not lost): then the
	// backup does not store it again.
	Stored(ctx context.Context, id chunkstore.ID) (bool, error)
	// CommitPack records the entries of a pack that is durable, before any
	// reference to them is counted.
	CommitPack(ctx context.Context, pack chunkstore.ID, entries []chunkstore.PackEntry) error
	// CountRefs counts one reference to each of ids, the positions
	// [pos, pos+len(ids)) of the manifest's reference list, together with
	// the backup's progress marker, so that a crash leaves a known prefix
	// counted. It is called in list order, each segment's part once that
	// segment is stored and every pack holding its new chunks committed.
	CountRefs(ctx context.Context, pos int64, ids []chunkstore.ID) error
}

// Parent is the backup an incremental starts from: chunks the plan does
// not read keep the parent's IDs.
type Parent struct {
	BackupID string
	Manifest *chunkstore.Manifest
}

// BackupInput is one backup's wiring.
type BackupInput struct {
	Store    *chunkstore.Store
	Catalog  Catalog
	BackupID string
	Source   Source
	Size     int64 // volume bytes
	// Read lists the chunks to read; every other chunk is zero, or the
	// parent's (Parent). Zero lists chunks known to be zero without a read
	// (discarded since the parent). Both sorted and merged (see Ranges).
	Read, Zero []Range
	Parent     *Parent
	// Known is a backup read whole again (an incremental without change
	// tracking), or nil. Its chunks are stored while it is available: a
	// chunk read with the ID Known has at the same index is not looked up
	// in the catalog (a profile of a 2 GiB full-read incremental spent 11%
	// of its CPU on those lookups). Should such a chunk have been lost
	// meanwhile, the caller must find out before the backup becomes
	// available (the service checks its chunks when a loss was recorded
	// while it ran); so the caller passes no Known whose backup is
	// damaged, and the next backup looks it up and stores it again.
	Known *Parent
	// Base, when set, is the backup the references are counted against:
	// of each segment, only the IDs not in Base's segment for the same
	// slot are counted (chunkstore.WalkRelRefs walks the same list), as
	// Base's own counts keep the others. Nil counts every ID.
	Base        *Parent
	Compression chunkstore.Compression
	Hashers     int     // goroutines hashing and compressing (default: the budget's size)
	Readers     int     // reads of the source in flight (default 1: a disk reads best in order)
	Uploaders   int     // packs uploading at once (default 2)
	Budget      *Budget // CPU tokens shared with other pipelines; nil: a private one
	// OnUpload is called with each pack's ID while it uploads (the service
	// records which packs a backup wrote, to remove them if it fails).
	OnUpload func(pack chunkstore.ID) error
	Progress func(done, total int64)
	Counters *Counters // totals to add to (a process's metrics); nil: none
}

// Counters are byte totals backups add to; nil fields are skipped.
type Counters struct {
	Read   *atomic.Int64 // chunks read (holes are not read)
	Zero   *atomic.Int64 // of those, all zeros: never stored
	Dedup  *atomic.Int64 // of those, already held (by the repository or this backup)
	New    *atomic.Int64 // of those, new, before compression
	Stored *atomic.Int64 // what the new chunks took in packs
}

func add(c *atomic.Int64, n int) {
	if c != nil {
		c.Add(int64(n))
	}
}

// BackupResult is what a backup stored.
type BackupResult struct {
	Manifest *chunkstore.Manifest // the head, stored
	Digest   chunkstore.ID        // the manifest digest
	Stored   int64                // bytes of new blobs
	Refs     int64                // length of the whole reference list (the manifest's)
	Counted  int64                // references counted: Refs, or the list relative to Base
}

const (
	// readBlock is how many bytes of consecutive chunks one read fetches.
	readBlock = 1 << 20
	// segmentsAhead bounds the segments being filled or waiting for their
	// packs; each holds at most one slot's refs and IDs (~0.6 MiB).
	segmentsAhead = 3
)

// Backup reads the planned chunks of a volume, stores the new ones and
// the manifest, and counts the backup's references segment by segment. On
// error nothing more is written; what was stored is the caller's to roll
// back (the catalog knows RefsApplied, the segments are a prefix).
func Backup(ctx context.Context, in BackupInput) (BackupResult, error) {
	b, err := newBackup(in)
	if err != nil {
		return BackupResult{}, err
	}
	return b.run(ctx)
}

type backup struct {
	in       BackupInput
	counters Counters
	cs       int64
	w        *chunkstore.ManifestWriter
	m        *chunkstore.Manifest
	packer   *chunkstore.Packer
	budget   *Budget
	hashers  int
	readers  int

	perBlock int
	heldMu   sync.Mutex
	held     map[*block]struct{} // read blocks taken from the budget and not given back
	runs     chan run
	jobs     chan job
	segs     chan *segState
	ahead    chan struct{}

	done    atomic.Int64
	total   int64
	counted int64 // references counted so far (commit)
}

type block struct {
	buf     []byte
	pending atomic.Int32 // chunks not yet hashed
}

// run is n consecutive chunks from first, all in one segment.
type run struct {
	first int64
	n     int
	seg   *segState
}

type job struct {
	idx  int64
	data []byte
	blk  *block
	seg  *segState
}

// segState is one slot being filled: the segment (nil while all zeros),
// the chunks planned but not hashed, the highest pack its new chunks are in.
type segState struct {
	slot  int
	m     *chunkstore.Manifest
	known *chunkstore.Segment // Known's segment for the slot, or nil (read only)
	base  []chunkstore.ID     // Base's ID table for the slot (nil: none)

	mu      sync.Mutex
	g       *chunkstore.Segment
	pending int
	sealed  bool
	maxSeq  uint64
	done    chan struct{}
}

func newBackup(in BackupInput) (*backup, error) {
	if in.Store == nil || in.Catalog == nil || in.Source == nil {
		return nil, errors.New("pipeline: a backup needs a store, a catalog and a source")
	}
	b := &backup{in: in, cs: int64(in.Store.Config().ChunkSize), budget: in.Budget.orDefault(), held: map[*block]struct{}{}}
	if in.Counters != nil {
		b.counters = *in.Counters
	}
	b.w = in.Store.NewManifestWriter(in.BackupID, in.Size)
	b.m = b.w.Manifest()
	if p := in.Parent; p != nil && p.Manifest.ChunkSize != int(b.cs) {
		return nil, fmt.Errorf("pipeline: parent backup %s has %d-byte chunks, the repository %d", p.BackupID, p.Manifest.ChunkSize, b.cs)
	}
	b.hashers = in.Hashers
	if b.hashers <= 0 {
		b.hashers = b.budget.Size()
	}
	b.readers = max(in.Readers, 1)
	b.perBlock = int(max(1, readBlock/b.cs))
	b.runs = make(chan run, b.readers)
	b.jobs = make(chan job, b.perBlock*cap(b.budget.blocks))
	b.segs = make(chan *segState, segmentsAhead)
	b.ahead = make(chan struct{}, segmentsAhead)
	for _, r := range in.Read {
		b.total += min(r.End*b.cs, in.Size) - min(r.First*b.cs, in.Size)
	}
	return b, nil
}

func (b *backup) run(ctx context.Context) (BackupResult, error) {
	b.budget.enter()
	defer b.budget.leave()
	g, ctx := errgroup.WithContext(ctx)
	b.packer = b.in.Store.NewPacker(ctx, b.in.Compression, chunkstore.PackerOptions{
		Uploaders: max(b.in.Uploaders, 2), Commit: b.in.Catalog.CommitPack, Slots: b.budget.packs})
	if b.in.OnUpload != nil {
		b.packer.OnUpload(b.in.OnUpload)
	}
	stop := report(b.in.Progress, &b.done, b.total)
	defer stop()
	g.Go(func() error { return b.plan(ctx) })
	g.Go(func() error {
		defer close(b.jobs)
		readers, rctx := errgroup.WithContext(ctx)
		for range b.readers {
			readers.Go(func() error { return b.read(rctx) })
		}
		return readers.Wait()
	})
	for range b.hashers {
		g.Go(func() error { return b.hash(ctx) })
	}
	var res BackupResult
	g.Go(func() (err error) { res, err = b.commit(ctx); return err })
	err := g.Wait()
	b.heldMu.Lock()
	for blk := range b.held { // blocks of chunks a failure left unhashed
		b.budget.putBlock(blk)
	}
	b.held = nil
	b.heldMu.Unlock()
	if err != nil {
		b.packer.Abort()
		return BackupResult{}, err
	}
	if b.in.Progress != nil {
		b.in.Progress(b.total, b.total)
	}
	return res, nil
}

// report calls progress(done, total) five times a second until stop (a
// nil progress reports nothing).
func report(progress func(done, total int64), done *atomic.Int64, total int64) (stop func()) {
	if progress == nil {
		return func() {}
	}
	quit := make(chan struct{})
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				progress(done.Load(), total)
			case <-quit:
				return
			}
		}
	}()
	return func() { close(quit) }
}

// plan walks the slots in order: each one that has chunks to read, to
// zero or to take from the parent becomes a segment handed to the
// committer, and its chunks are queued for the readers in runs of up to
// one block.
func (b *backup) plan(ctx context.Context) error {
	defer close(b.runs)
	defer close(b.segs)
	read, zero := cursor{ranges: b.in.Read}, cursor{ranges: b.in.Zero}
	for slot := range b.m.Slots() {
		first, n := b.m.SlotRange(slot)
		end := first + int64(n)
		reads, zeros := read.within(first, end), zero.within(first, end)
		g, pg, err := b.seed(ctx, slot)
		if err != nil {
			return err
		}
		if len(reads) == 0 && g == nil {
			continue // all zeros: no segment
		}
		select {
		case b.ahead <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		known, err := b.known(ctx, slot)
		if err != nil {
			return err
		}
		base, err := b.baseIDs(ctx, slot, known, pg)
		if err != nil {
			return err
		}
		st := &segState{slot: slot, m: b.m, g: g, known: known, base: base, done: make(chan struct{})}
		for _, z := range zeros {
			for i := z.First; i < z.End && g != nil; i++ {
				g.SetZero(i)
			}
		}
		b.segs <- st // room: segmentsAhead tokens are held at most
		for _, r := range reads {
			for i := r.First; i < r.End; i += int64(b.perBlock) {
				k := int(min(int64(b.perBlock), r.End-i))
				st.add(k)
				select {
				case b.runs <- run{first: i, n: k, seg: st}:
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
		}
		st.seal()
	}
	return nil
}

// seed is the parent's segment for slot, copied, keeping only chunks of
// the same length in both (the parent's short last chunk is read again);
// nil when there is no parent or its slot is all zeros. pg is the
// parent's segment of the same slot as loaded (nil when none was, as
// when the parent's segments have another size), for baseIDs.
func (b *backup) seed(ctx context.Context, slot int) (g, pg *chunkstore.Segment, err error) {
	p := b.in.Parent
	if p == nil {
		return nil, nil, nil
	}
	pm := p.Manifest
	first, n := b.m.SlotRange(slot)
	if first >= pm.Chunks() {
		return nil, nil, nil
	}
	if pm.SegmentChunks != b.m.SegmentChunks {
		g, err = b.seedAcross(ctx, first, n)
		return g, nil, err
	}
	k, ok := pm.Find(slot)
	if !ok {
		return nil, nil, nil
	}
	if pg, err = b.in.Store.LoadSegment(ctx, p.BackupID, pm, k); err != nil {
		return nil, nil, fmt.Errorf("parent backup %s: %w", p.BackupID, err)
	}
	return b.copyChunks(nil, pg, first, n), pg, nil
}

// known is Known's segment for slot, nil when there is none, its slot is
// all zeros, or its segments have another size (then every chunk is
// looked up, as without Known).
func (b *backup) known(ctx context.Context, slot int) (*chunkstore.Segment, error) {
	k := b.in.Known
	if k == nil || k.Manifest.SegmentChunks != b.m.SegmentChunks {
		return nil, nil
	}
	i, ok := k.Manifest.Find(slot)
	if !ok {
		return nil, nil
	}
	g, err := b.in.Store.LoadSegment(ctx, k.BackupID, k.Manifest, i)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", k.BackupID, err)
	}
	return g, nil
}

// baseIDs is the ID table of Base's segment for slot (Known's or the
// parent's, when that is the same backup and plan loaded its segment),
// nil when Base has none.
func (b *backup) baseIDs(ctx context.Context, slot int, known, parent *chunkstore.Segment) ([]chunkstore.ID, error) {
	p := b.in.Base
	if p == nil {
		return nil, nil
	}
	if known != nil && b.in.Known.BackupID == p.BackupID {
		return known.IDs, nil
	}
	if parent != nil && b.in.Parent.BackupID == p.BackupID {
		return parent.IDs, nil
	}
	k, ok := p.Manifest.Find(slot)
	if !ok {
		return nil, nil
	}
	g, err := b.in.Store.LoadSegment(ctx, p.BackupID, p.Manifest, k)
	if err != nil {
		return nil, fmt.Errorf("base backup %s: %w", p.BackupID, err)
	}
	return g.IDs, nil
}

// seedAcross seeds a slot from a parent whose segments have another size
// (a version-1 manifest is one segment: that case is the common one).
func (b *backup) seedAcross(ctx context.Context, first int64, n int) (*chunkstore.Segment, error) {
	p := b.in.Parent
	var g *chunkstore.Segment
	for i := first; i < first+int64(n) && i < p.Manifest.Chunks(); {
		slot := int(i / int64(p.Manifest.SegmentChunks))
		pFirst, pn := p.Manifest.SlotRange(slot)
		if k, ok := p.Manifest.Find(slot); ok {
			pg, err := b.in.Store.LoadSegment(ctx, p.BackupID, p.Manifest, k)
			if err != nil {
				return nil, fmt.Errorf("parent backup %s: %w", p.BackupID, err)
			}
			g = b.copyChunks(g, pg, i, int(min(first+int64(n), pFirst+int64(pn))-i))
		}
		i = pFirst + int64(pn)
	}
	return g, nil
}

// copyChunks sets chunks [from, from+n) of g (made when nil) to the
// parent's IDs where the chunk has the same length in both.
func (b *backup) copyChunks(g, pg *chunkstore.Segment, from int64, n int) *chunkstore.Segment {
	pm := b.in.Parent.Manifest
	for i := from; i < from+int64(n) && i < pg.First+int64(pg.Len()); i++ {
		id, ok := pg.Chunk(i)
		if !ok || pm.ChunkLen(i) != b.m.ChunkLen(i) {
			continue
		}
		if g == nil {
			g = b.m.NewSegment(int(from / int64(b.m.SegmentChunks)))
		}
		g.Set(i, id)
	}
	return g
}

// takeBlock takes a read block from the budget; giveBlock returns it.
// Whatever a failed backup holds goes back when it ends.
func (b *backup) takeBlock(ctx context.Context, size int) (*block, error) {
	blk, err := b.budget.block(ctx, size)
	if err != nil {
		return nil, err
	}
	b.heldMu.Lock()
	b.held[blk] = struct{}{}
	b.heldMu.Unlock()
	return blk, nil
}

func (b *backup) giveBlock(blk *block) {
	b.heldMu.Lock()
	_, ok := b.held[blk]
	delete(b.held, blk)
	b.heldMu.Unlock()
	if ok {
		b.budget.putBlock(blk)
	}
}

// read fills blocks with runs of chunks and queues the chunks.
func (b *backup) read(ctx context.Context) error {
	for {
		var r run
		var ok bool
		select {
		case r, ok = <-b.runs:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if !ok {
			return nil
		}
		off := r.first * b.cs
		end := min(off+int64(r.n)*b.cs, b.in.Size)
		blk, err := b.takeBlock(ctx, int(end-off))
		if err != nil {
			return err
		}
		if _, err := b.in.Source.ReadAt(blk.buf, off); err != nil {
			b.giveBlock(blk)
			return fmt.Errorf("reading volume at byte offset %d: %w", off, err)
		}
		blk.pending.Store(int32(r.n))
		for k := range r.n {
			lo := int64(k) * b.cs
			j := job{idx: r.first + int64(k), data: blk.buf[lo:min(lo+b.cs, end-off)], blk: blk, seg: r.seg}
			select {
			case b.jobs <- j:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
}

// hash takes chunks one by one: zero check, hash, segment, catalog lookup
// for a first use, compression for a chunk not stored yet (all holding a
// CPU token), then the packer (without one: it may wait for a buffer).
func (b *backup) hash(ctx context.Context) error {
	var scratch []byte
	for j := range b.jobs {
		if err := b.budget.acquire(ctx); err != nil {
			return err
		}
		id, blob, codec, err := b.hashOne(ctx, j, scratch[:0])
		b.budget.release()
		rawLen := len(j.data)
		// The chunk's bytes are no longer needed (a blob is a copy): give
		// the block back before waiting for a pack buffer, so that a backup
		// waiting for one never holds the read blocks other backups need
		// to fill theirs.
		b.done.Add(int64(rawLen))
		if j.blk.pending.Add(-1) == 0 {
			b.giveBlock(j.blk)
		}
		if err == nil && blob != nil {
			scratch = blob
			var seq uint64
			var n int
			if seq, n, err = b.packer.AddBlob(id, rawLen, codec, blob); err == nil {
				if n > 0 {
					add(b.counters.New, rawLen)
					add(b.counters.Stored, n)
				} else {
					add(b.counters.Dedup, rawLen) // another hasher stored it meanwhile
				}
				j.seg.noteSeq(seq)
			}
		}
		if err != nil {
			return err
		}
		j.seg.finish()
	}
	return nil
}

// hashOne returns the stored form of a chunk not stored yet (made in
// dst) and its codec, nil otherwise. Chunk IDs are the store's (keyed in
// an encrypted repository).
func (b *backup) hashOne(ctx context.Context, j job, dst []byte) (chunkstore.ID, []byte, chunkstore.Codec, error) {
	c := b.counters
	add(c.Read, len(j.data))
	st := j.seg
	if chunkstore.IsZero(j.data) {
		add(c.Zero, len(j.data))
		st.setZero(j.idx) // a chunk seeded from the parent may have become zero
		return chunkstore.ID{}, nil, 0, nil
	}
	id := b.in.Store.ChunkID(j.data)
	if !st.set(j.idx, id) || st.knownAt(j.idx, id) {
		add(c.Dedup, len(j.data))
		return id, nil, 0, nil // already handled in this segment, or Known holds it
	}
	stored, err := b.in.Catalog.Stored(ctx, id)
	if err != nil || stored {
		add(c.Dedup, len(j.data))
		return id, nil, 0, err
	}
	if seq, ok := b.packer.Pending(id); ok {
		add(c.Dedup, len(j.data))
		st.noteSeq(seq)
		return id, nil, 0, nil
	}
	blob, codec := b.packer.Encode(dst, id, j.data)
	return id, blob, codec, nil
}

// commit stores the segments in slot order, each once its chunks are
// hashed and the packs holding its new chunks are committed, and counts
// its references; then the manifest head.
func (b *backup) commit(ctx context.Context) (BackupResult, error) {
	for st := range b.segs {
		select {
		case <-st.done:
		case <-ctx.Done():
			return BackupResult{}, context.Cause(ctx)
		}
		if err := b.packer.Sync(ctx, st.maxSeq); err != nil {
			return BackupResult{}, err
		}
		if st.g != nil {
			ids, pos, err := b.w.Put(ctx, st.g)
			if err != nil {
				return BackupResult{}, err
			}
			if len(ids) > 0 {
				failpoint.Hit("backup.segment-written")
			}
			if b.in.Base != nil {
				ids, pos = chunkstore.RelativeIDs(ids, st.base), b.counted
			}
			if len(ids) > 0 {
				if err := b.in.Catalog.CountRefs(ctx, pos, ids); err != nil {
					return BackupResult{}, err
				}
			}
			b.counted += int64(len(ids))
			st.g = nil
		}
		<-b.ahead
	}
	if err := ctx.Err(); err != nil {
		return BackupResult{}, context.Cause(ctx)
	}
	if err := b.packer.Close(); err != nil {
		return BackupResult{}, err
	}
	failpoint.Hit("backup.packs-written")
	digest, err := b.w.Finish(ctx)
	if err != nil {
		return BackupResult{}, err
	}
	return BackupResult{Manifest: b.m, Digest: digest, Stored: b.packer.Stored(), Refs: b.m.Refs(), Counted: b.counted}, nil
}

func (s *segState) add(n int) {
	s.mu.Lock()
	s.pending += n
	s.mu.Unlock()
}

func (s *segState) seal() {
	s.mu.Lock()
	s.sealed = true
	s.check()
	s.mu.Unlock()
}

func (s *segState) finish() {
	s.mu.Lock()
	s.pending--
	s.check()
	s.mu.Unlock()
}

// check closes done once every planned chunk is hashed. Under mu.
func (s *segState) check() {
	if s.sealed && s.pending == 0 {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
}

func (s *segState) set(i int64, id chunkstore.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.g == nil {
		s.g = s.m.NewSegment(s.slot)
	}
	return s.g.Set(i, id)
}

// knownAt reports whether Known's segment has id at chunk i. Read only
// after plan made it: no lock.
func (s *segState) knownAt(i int64, id chunkstore.ID) bool {
	if s.known == nil || i < s.known.First || i >= s.known.First+int64(s.known.Len()) {
		return false
	}
	k, ok := s.known.Chunk(i)
	return ok && k == id
}

func (s *segState) setZero(i int64) {
	s.mu.Lock()
	if s.g != nil {
		s.g.SetZero(i)
	}
	s.mu.Unlock()
}

func (s *segState) noteSeq(seq uint64) {
	s.mu.Lock()
	s.maxSeq = max(s.maxSeq, seq)
	s.mu.Unlock()
}
