package volume

import (
	"sort"
	"sync"
)

// Gatherer gathers a target's writes into aligned segments and writes
// each with one call: a restore writes chunk by chunk (64 KiB), and both
// an RBD image (a librbd request per write) and a file written with
// O_DIRECT cost far less per byte in 1 MiB writes. A segment is written
// by the WriteAt that completes it, partly written ones when too many are
// pending, and by Flush. A write therefore fails in the call that flushes
// it; once one has failed, every later call returns that error.
// Concurrent use on distinct ranges is safe; writes to one range land in
// the order they were made.
type Gatherer struct {
	size, seg  int64
	maxPending int
	write      func(off int64, p []byte) error
	alloc      func(n int) []byte

	mu      sync.Mutex
	done    *sync.Cond         // signalled when a flush ends
	pending map[int64]*segment // by segment index
	order   []int64            // pending segments, oldest first
	busy    map[int64]bool     // segments being written
	err     error              // the first failed write
	// free holds segment buffers for reuse: a restore needs no more than
	// maxPending plus the writes in flight, and reusing them keeps that
	// many in the heap instead of a new one per segment for the GC.
	free []*[]byte
}

// segment is the data gathered for one segment and the ranges of it
// written (sorted, disjoint, relative to the segment's start).
type segment struct {
	buf    *[]byte
	ranges [][2]int64
}

// NewGatherer gathers writes to a volume of size bytes into segments of
// seg bytes (aligned to seg), at most maxPending being filled at once
// (beyond, the oldest is written as it is, a call per written range).
// write writes p at off; alloc makes a segment buffer of n bytes (nil:
// make).
func NewGatherer(size, seg int64, maxPending int, write func(off int64, p []byte) error, alloc func(n int) []byte) *Gatherer {
	if alloc == nil {
		alloc = func(n int) []byte { return make([]byte, n) }
	}
	g := &Gatherer{size: size, seg: seg, maxPending: maxPending, write: write, alloc: alloc,
		pending: map[int64]*segment{}, busy: map[int64]bool{}}
	g.done = sync.NewCond(&g.mu)
	return g
}

// segLen is the length of segment i (the last one may be short).
func (g *Gatherer) segLen(i int64) int64 { return min(g.seg, g.size-i*g.seg) }

// WriteAt gathers p into its segments, writing those it completes. The
// caller checks the range.
func (g *Gatherer) WriteAt(p []byte, off int64) (int, error) {
	for done := 0; done < len(p); {
		pos := off + int64(done)
		i := pos / g.seg
		n := int(min(int64(len(p)-done), (i+1)*g.seg-pos))
		if err := g.gather(i, pos-i*g.seg, p[done:done+n]); err != nil {
			return done, err
		}
		done += n
	}
	return len(p), nil
}

// gather copies p to offset rel of segment i and writes the segment when
// that completes it; it writes the oldest pending segments when too many
// are pending.
func (g *Gatherer) gather(i, rel int64, p []byte) error {
	g.mu.Lock()
	for g.busy[i] && g.err == nil {
		g.done.Wait() // an earlier write of this segment is in flight
	}
	if g.err != nil {
		g.mu.Unlock()
		return g.err
	}
	s := g.pending[i]
	if s == nil {
		if rel == 0 && int64(len(p)) == g.segLen(i) {
			// A whole segment at once: write it as it is.
			g.busy[i] = true
			g.mu.Unlock()
			return g.finish(i, g.write(i*g.seg, p))
		}
		s = &segment{buf: g.buffer()}
		g.pending[i] = s
		g.order = append(g.order, i)
	}
	copy((*s.buf)[rel:], p)
	s.add(rel, rel+int64(len(p)))
	var flush []int64
	if len(s.ranges) == 1 && s.ranges[0] == [2]int64{0, g.segLen(i)} {
		flush = append(flush, i)
	}
	for k := 0; k < len(g.order) && len(g.pending)-len(flush) > g.maxPending; k++ {
		if o := g.order[k]; o != i {
			flush = append(flush, o)
		}
	}
	segs := g.take(flush)
	g.mu.Unlock()
	return g.writeAll(segs)
}

// take removes the segments idx from the pending ones and marks them busy;
// g.mu is held.
func (g *Gatherer) take(idx []int64) map[int64]*segment {
	out := map[int64]*segment{}
	for _, i := range idx {
		if s := g.pending[i]; s != nil {
			out[i] = s
			delete(g.pending, i)
			g.busy[i] = true
		}
	}
	if len(out) > 0 {
		keep := g.order[:0]
		for _, i := range g.order {
			if out[i] == nil {
				keep = append(keep, i)
			}
		}
		g.order = keep
	}
	return out
}

// writeAll writes the taken segments' written ranges and releases them.
func (g *Gatherer) writeAll(segs map[int64]*segment) error {
	var first error
	for i, s := range segs {
		var err error
		for _, r := range s.ranges {
			if err = g.write(i*g.seg+r[0], (*s.buf)[r[0]:r[1]]); err != nil {
				break
			}
		}
		g.mu.Lock()
		g.free = append(g.free, s.buf)
		g.mu.Unlock()
		if err = g.finish(i, err); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// finish ends the flush of segment i, recording err as the gatherer's.
func (g *Gatherer) finish(i int64, err error) error {
	g.mu.Lock()
	delete(g.busy, i)
	if err != nil && g.err == nil {
		g.err = err
	}
	err = g.err
	g.mu.Unlock()
	g.done.Broadcast()
	return err
}

// Fail records err (when not nil) as a failed write of the target's, for
// a failure outside the gatherer (a discard), and returns the first one.
func (g *Gatherer) Fail(err error) error { return g.finish(-1, err) }

// buffer takes a free segment buffer or makes one; g.mu is held.
func (g *Gatherer) buffer() *[]byte {
	if n := len(g.free); n > 0 {
		b := g.free[n-1]
		g.free = g.free[:n-1]
		return b
	}
	b := g.alloc(int(g.seg))
	return &b
}

// add records [lo, hi) as written, merging it with the ranges it touches.
func (s *segment) add(lo, hi int64) {
	r := s.ranges
	i := sort.Search(len(r), func(k int) bool { return r[k][1] >= lo })
	j := i
	for j < len(r) && r[j][0] <= hi {
		lo, hi = min(lo, r[j][0]), max(hi, r[j][1])
		j++
	}
	s.ranges = append(r[:i], append([][2]int64{{lo, hi}}, r[j:]...)...)
}

// Flush writes the pending segments overlapping [off, off+n) (all of them
// when n < 0) and waits for writes of them in flight.
func (g *Gatherer) Flush(off, n int64) error {
	g.mu.Lock()
	var idx []int64
	for i := range g.pending {
		if n < 0 || (i*g.seg < off+n && off < (i+1)*g.seg) {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	segs := g.take(idx)
	g.mu.Unlock()
	err := g.writeAll(segs)
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		inFlight := false
		for i := range g.busy {
			if n < 0 || (i*g.seg < off+n && off < (i+1)*g.seg) {
				inFlight = true
			}
		}
		if !inFlight || g.err != nil {
			break
		}
		g.done.Wait()
	}
	if err == nil {
		err = g.err
	}
	return err
}
