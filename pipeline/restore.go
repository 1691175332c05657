package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/service/failpoint"
)

// Target is the volume a restore writes. WriteAt is safe for concurrent
// use on distinct ranges.
type Target interface {
	WriteAt(p []byte, off int64) (int, error)
	// Zero makes a range read as zeros; a Fresh target is all zeros already.
	Zero(off, length int64) error
	Fresh() bool
	Sync() error
}

// RestoreInput is one restore's wiring.
type RestoreInput struct {
	Store    *chunkstore.Store
	BackupID string
	Manifest *chunkstore.Manifest
	Locator  Locator
	// Lost is told about a chunk that read back missing or corrupt (the
	// caller records it) and returns the error to report; nil reports
	// the read's error as it is.
	Lost     func(ctx context.Context, id chunkstore.ID, loc chunkstore.Location, cause error) error
	Target   Target
	Fetchers int     // pack reads in flight (default 8)
	Decoders int     // goroutines decoding and verifying (default: the budget's size)
	Writers  int     // target writes in flight (default 1; see run)
	Budget   *Budget // CPU tokens shared with other pipelines; nil: a private one
	Progress func(done, total int64)
	Written  *atomic.Int64 // bytes written to add to (a process's metrics); nil: none
}

// Restore writes every chunk of the manifest to the target, verified, then
// syncs it. Zero chunks cost nothing on a fresh target and are zeroed in
// runs on another; slots without a segment are skipped whole.
func Restore(ctx context.Context, in RestoreInput) error {
	r := &restore{in: in, cs: int64(in.Manifest.ChunkSize), budget: in.Budget.orDefault()}
	return r.run(ctx)
}

type restore struct {
	in     RestoreInput
	cs     int64
	budget *Budget
	bufs   chan *chunkBuf
	fetch  chan *chunkBuf
	decode chan *chunkBuf
	write  chan *chunkBuf
	done   atomic.Int64
}

// chunkBuf carries one chunk (or a run of zeros) through the stages.
type chunkBuf struct {
	idx   int64 // first chunk
	n     int64 // chunks: 1, or a run of zeros
	id    chunkstore.ID
	loc   chunkstore.Location
	known bool // loc is set (the segment was located at once)
	blob  []byte
	raw   []byte
	data  []byte // what to write; nil with zero
	zero  bool
	owned bool // from the pool (not a zero run)
}

func (r *restore) run(ctx context.Context) error {
	in := r.in
	fetchers, writers := in.Fetchers, in.Writers
	if fetchers <= 0 {
		fetchers = 8
	}
	if writers <= 0 {
		// One: a local file's buffered writes serialize on its inode
		// lock, and a second writer only spins on it (W8 restore spent
		// 17% of its samples in rwsem_spin_on_owner). Targets whose
		// writes are round trips (RBD) ask for more.
		writers = 1
	}
	decoders := in.Decoders
	if decoders <= 0 {
		decoders = r.budget.Size()
	}
	n := fetchers + decoders + writers + 4
	r.bufs = make(chan *chunkBuf, n)
	for range n {
		r.bufs <- &chunkBuf{blob: make([]byte, 0, int(r.cs)+5), raw: make([]byte, 0, int(r.cs)+chunkstore.ZstdSlack), owned: true}
	}
	r.fetch = make(chan *chunkBuf, n)
	r.decode = make(chan *chunkBuf, n)
	r.write = make(chan *chunkBuf, n)
	stop := report(r.in.Progress, &r.done, r.in.Manifest.Size)
	defer stop()

	g, ctx := errgroup.WithContext(ctx)
	segs := make(chan locatedSlot) // unbuffered: one segment located ahead
	g.Go(func() error { defer close(segs); return r.locate(ctx, segs) })
	g.Go(func() error { defer close(r.fetch); return r.plan(ctx, segs) })
	stage := func(workers int, in <-chan *chunkBuf, out chan<- *chunkBuf, fn func(context.Context, *chunkBuf) error) {
		sub, sctx := errgroup.WithContext(ctx)
		for range workers {
			sub.Go(func() error {
				for c := range in {
					if err := fn(sctx, c); err != nil {
						return err
					}
					if out != nil {
						select {
						case out <- c:
						case <-sctx.Done():
							return context.Cause(sctx)
						}
					}
				}
				return nil
			})
		}
		g.Go(func() error {
			if out != nil {
				defer close(out)
			}
			return sub.Wait()
		})
	}
	stage(fetchers, r.fetch, r.decode, r.fetchOne)
	stage(decoders, r.decode, r.write, r.decodeOne)
	stage(writers, r.write, nil, r.writeOne)
	if err := g.Wait(); err != nil {
		return err
	}
	if err := in.Target.Sync(); err != nil {
		return fmt.Errorf("syncing the restored volume: %w", err)
	}
	if in.Progress != nil {
		in.Progress(in.Manifest.Size, in.Manifest.Size)
	}
	return nil
}

// locatedSlot is one slot's segment, loaded and its chunks located; g is nil
// for a slot without a segment (all zeros).
type locatedSlot struct {
	slot int
	g    *chunkstore.Segment
	locs []chunkstore.Location // nil: the locator locates chunk by chunk
}

// locate loads and locates each slot's segment in order, one ahead of
// plan: the next segment's read and catalog lookups then overlap the
// chunks of this one in flight, instead of the pipeline draining at each
// segment while plan does them (a sparse volume has a segment for every
// data piece, 64 MiB in W8, not one for every GiB).
func (r *restore) locate(ctx context.Context, out chan<- locatedSlot) error {
	m := r.in.Manifest
	sl, _ := r.in.Locator.(SegmentLocator)
	for slot := range m.Slots() {
		l := locatedSlot{slot: slot}
		if k, ok := m.Find(slot); ok {
			g, err := r.in.Store.LoadSegment(ctx, r.in.BackupID, m, k)
			if err != nil {
				return err
			}
			l.g = g
			if sl != nil {
				if l.locs, err = sl.LocateSegment(ctx, g); err != nil {
					return fmt.Errorf("backup %s: locating the chunks of slot %d: %w", r.in.BackupID, slot, err)
				}
			}
		}
		select {
		case out <- l:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// plan takes the located slots in order and queues each chunk, and each
// run of zero chunks a target needs zeroed.
func (r *restore) plan(ctx context.Context, segs <-chan locatedSlot) error {
	fresh := r.in.Target.Fresh()
	zeros := func(first, n int64) error {
		if n == 0 {
			return nil
		}
		if fresh {
			r.done.Add(r.bytes(first, n))
			return nil
		}
		return r.send(ctx, r.fetch, &chunkBuf{idx: first, n: n, zero: true})
	}
	for l := range segs {
		first, n := r.in.Manifest.SlotRange(l.slot)
		if l.g == nil {
			if err := zeros(first, int64(n)); err != nil {
				return err
			}
			continue
		}
		g, locs := l.g, l.locs
		run := int64(0) // zero chunks before i not queued yet
		for i := first; i < first+int64(n); i++ {
			ref := g.Refs[i-first]
			if ref == 0 {
				run++
				continue
			}
			if err := zeros(i-run, run); err != nil {
				return err
			}
			run = 0
			var c *chunkBuf
			select {
			case c = <-r.bufs:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			c.idx, c.n, c.id, c.known = i, 1, g.IDs[ref-1], false
			if locs != nil && locs[ref-1].Length != 0 { // else lost: Locate says so
				c.loc, c.known = locs[ref-1], true
			}
			if err := r.send(ctx, r.fetch, c); err != nil {
				return err
			}
		}
		if err := zeros(first+int64(n)-run, run); err != nil {
			return err
		}
	}
	return nil
}

func (r *restore) send(ctx context.Context, ch chan<- *chunkBuf, c *chunkBuf) error {
	select {
	case ch <- c:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// bytes is the volume bytes of chunks [first, first+n).
func (r *restore) bytes(first, n int64) int64 {
	return min((first+n)*r.cs, r.in.Manifest.Size) - first*r.cs
}

// fetchOne locates a chunk and reads its blob.
func (r *restore) fetchOne(ctx context.Context, c *chunkBuf) error {
	if c.zero {
		return nil
	}
	if !c.known {
		loc, err := r.in.Locator.Locate(ctx, c.id)
		if err != nil {
			return r.failed(c, err)
		}
		c.loc = loc
	}
	blob, err := r.in.Store.ReadBlob(ctx, c.id, c.loc, c.blob)
	if err != nil {
		return r.lost(ctx, c, err)
	}
	c.blob = blob[:0]
	c.data = blob
	return nil
}

// decodeOne decompresses and verifies a blob.
func (r *restore) decodeOne(ctx context.Context, c *chunkBuf) error {
	if c.zero {
		return nil
	}
	if err := r.budget.acquire(ctx); err != nil {
		return err
	}
	raw, err := r.in.Store.OpenBlob(c.id, c.loc, c.data, c.raw)
	r.budget.release()
	if err != nil {
		return r.lost(ctx, c, err)
	}
	if want := r.bytes(c.idx, 1); int64(len(raw)) != want {
		return r.failed(c, fmt.Errorf("chunk %s holds %d bytes, the manifest expects %d: %w", c.id, len(raw), want, chunkstore.ErrCorrupt))
	}
	if c.loc.Codec != chunkstore.CodecRaw {
		c.raw = raw[:0]
	}
	c.data = raw
	return nil
}

// writeOne writes a chunk (or zeroes a run) and recycles its buffer.
func (r *restore) writeOne(ctx context.Context, c *chunkBuf) error {
	off, n := c.idx*r.cs, r.bytes(c.idx, c.n)
	var err error
	if c.zero {
		err = r.in.Target.Zero(off, n)
	} else {
		_, err = r.in.Target.WriteAt(c.data, off)
	}
	if err != nil {
		return r.failed(c, err)
	}
	r.done.Add(n)
	if !c.zero {
		add(r.in.Written, int(n))
	}
	if c.owned {
		c.data = nil
		r.bufs <- c
		failpoint.Hit("restore.chunk")
	}
	return nil
}

// lost reports a chunk whose read failed: one missing or corrupt is
// recorded through Lost (unless the restore is being cancelled).
func (r *restore) lost(ctx context.Context, c *chunkBuf, err error) error {
	if ctx.Err() == nil && r.in.Lost != nil && (errors.Is(err, repo.ErrNotFound) || errors.Is(err, chunkstore.ErrCorrupt)) {
		err = r.in.Lost(ctx, c.id, c.loc, err)
	}
	return r.failed(c, err)
}

func (r *restore) failed(c *chunkBuf, err error) error {
	return fmt.Errorf("backup %s: chunk at byte offset %d: %w", r.in.BackupID, c.idx*r.cs, err)
}
