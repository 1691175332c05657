//go:build ceph

package rbd

import (
	"fmt"
	"sort"
	"sync"

	"github.com/volback/volback/drivers/volume"
)

var (
	_ volume.Target   = (*target)(nil)
	_ volume.Parallel = (*target)(nil)
)

const (
	// maxSegment is the most one write to librbd carries: a restore
	// writes 64 KiB chunks, and each librbd request costs client and OSD
	// CPU of its own (measured here: 64 KiB writes took about twice the
	// CPU of 1 MiB ones per byte), so chunks are gathered into segments.
	maxSegment = 1 << 20
	// maxPending bounds the segments being filled at once; beyond it the
	// oldest is written as it is (its written ranges, one request each).
	maxPending = 16
)

// target is an image opened for writing. Writes are gathered per segment
// (maxSegment bytes, aligned, never across objects): a segment is written
// with one librbd request by the WriteAt that completes it, and partly
// written ones when too many are pending, before a Zero that overlaps
// them, and by Sync and Close. A write therefore fails in the WriteAt,
// Sync or Close that flushes it; once one has failed, every later call
// returns that error. Concurrent use on distinct ranges is safe; writes to
// one range land in the order they were made.
type target struct {
	im    *image
	size  int64
	fresh bool
	seg   int64 // segment size

	mu      sync.Mutex
	done    *sync.Cond         // signalled when a flush ends
	pending map[int64]*segment // by segment index
	order   []int64            // pending segments, oldest first
	busy    map[int64]bool     // segments being written
	err     error              // the first failed write
	bufs    sync.Pool          // *[]byte of t.seg bytes
}

// segment is the data gathered for one segment and the ranges of it
// written (sorted, disjoint, relative to the segment's start).
type segment struct {
	buf    *[]byte
	ranges [][2]int64
}

func newTarget(im *image, fresh bool) (*target, error) {
	size, err := im.size()
	if err != nil {
		im.close()
		return nil, err
	}
	info, err := im.Stat()
	if err != nil {
		im.close()
		return nil, opErr(im.loc, "stat", err)
	}
	seg := min(int64(maxSegment), int64(info.Obj_size))
	t := &target{im: im, size: size, fresh: fresh, seg: max(seg, 4096), pending: map[int64]*segment{}, busy: map[int64]bool{}}
	t.done = sync.NewCond(&t.mu)
	return t, nil
}

func (t *target) Size() int64   { return t.size }
func (t *target) InFlight() int { return inFlight }
func (t *target) Fresh() bool   { return t.fresh }

// segLen is the length of segment i (the last one may be short).
func (t *target) segLen(i int64) int64 { return min(t.seg, t.size-i*t.seg) }

// WriteAt gathers p into its segments, writing those it completes. Writes
// past the end are refused: an image is never grown.
func (t *target) WriteAt(p []byte, off int64) (int, error) {
	if err := t.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		i := pos / t.seg
		n := int(min(int64(len(p)-done), (i+1)*t.seg-pos))
		if err := t.gather(i, pos-i*t.seg, p[done:done+n]); err != nil {
			return done, err
		}
		done += n
	}
	return len(p), nil
}

// gather copies p to offset rel of segment i and writes the segment when
// that completes it; it writes the oldest pending segments when too many
// are pending.
func (t *target) gather(i, rel int64, p []byte) error {
	t.mu.Lock()
	for t.busy[i] && t.err == nil {
		t.done.Wait() // an earlier write of this segment is in flight
	}
	if t.err != nil {
		t.mu.Unlock()
		return t.err
	}
	s := t.pending[i]
	if s == nil {
		if rel == 0 && int64(len(p)) == t.segLen(i) {
			// A whole segment at once: write it as it is.
			t.busy[i] = true
			t.mu.Unlock()
			return t.finish(i, t.write(i*t.seg, p))
		}
		s = &segment{buf: t.buffer()}
		t.pending[i] = s
		t.order = append(t.order, i)
	}
	copy((*s.buf)[rel:], p)
	s.add(rel, rel+int64(len(p)))
	var flush []int64
	if len(s.ranges) == 1 && s.ranges[0] == [2]int64{0, t.segLen(i)} {
		flush = append(flush, i)
	}
	for k := 0; k < len(t.order) && len(t.pending)-len(flush) > maxPending; k++ {
		if o := t.order[k]; o != i {
			flush = append(flush, o)
		}
	}
	segs := t.take(flush)
	t.mu.Unlock()
	return t.writeAll(segs)
}

// take removes the segments idx from the pending ones and marks them busy;
// t.mu is held.
func (t *target) take(idx []int64) map[int64]*segment {
	out := map[int64]*segment{}
	for _, i := range idx {
		if s := t.pending[i]; s != nil {
			out[i] = s
			delete(t.pending, i)
			t.busy[i] = true
		}
	}
	if len(out) > 0 {
		keep := t.order[:0]
		for _, i := range t.order {
			if out[i] == nil {
				keep = append(keep, i)
			}
		}
		t.order = keep
	}
	return out
}

// writeAll writes the taken segments' written ranges and releases them.
func (t *target) writeAll(segs map[int64]*segment) error {
	var first error
	for i, s := range segs {
		var err error
		for _, r := range s.ranges {
			if err = t.write(i*t.seg+r[0], (*s.buf)[r[0]:r[1]]); err != nil {
				break
			}
		}
		t.bufs.Put(s.buf)
		if err = t.finish(i, err); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// finish ends the flush of segment i, recording err as the target's.
func (t *target) finish(i int64, err error) error {
	t.mu.Lock()
	delete(t.busy, i)
	if err != nil && t.err == nil {
		t.err = err
	}
	err = t.err
	t.mu.Unlock()
	t.done.Broadcast()
	return err
}

func (t *target) write(off int64, p []byte) error {
	if _, err := t.im.WriteAt(p, off); err != nil {
		return opErr(t.im.loc, fmt.Sprintf("write at byte %d of", off), err)
	}
	return nil
}

func (t *target) buffer() *[]byte {
	if b, ok := t.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, t.seg)
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

// flushRange writes the pending segments overlapping [off, off+n) (all of
// them when n < 0) and waits for writes of them in flight.
func (t *target) flushRange(off, n int64) error {
	t.mu.Lock()
	var idx []int64
	for i := range t.pending {
		if n < 0 || (i*t.seg < off+n && off < (i+1)*t.seg) {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	segs := t.take(idx)
	t.mu.Unlock()
	err := t.writeAll(segs)
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		inFlight := false
		for i := range t.busy {
			if n < 0 || (i*t.seg < off+n && off < (i+1)*t.seg) {
				inFlight = true
			}
		}
		if !inFlight || t.err != nil {
			break
		}
		t.done.Wait()
	}
	if err == nil {
		err = t.err
	}
	return err
}

// Zero discards the range, after writing what is gathered for it: whole
// objects are removed, partial ones zeroed (exactly: see conn.go,
// rbd_skip_partial_discard).
func (t *target) Zero(off, length int64) error {
	if err := t.checkRange(off, length); err != nil {
		return err
	}
	if err := t.flushRange(off, length); err != nil || length == 0 {
		return err
	}
	if _, err := t.im.Discard(uint64(off), uint64(length)); err != nil {
		return t.finish(-1, opErr(t.im.loc, fmt.Sprintf("discard bytes %d-%d of", off, off+length), err))
	}
	return nil
}

// Sync writes everything gathered and flushes librbd's cache.
func (t *target) Sync() error {
	if err := t.flushRange(0, -1); err != nil {
		return err
	}
	if err := t.im.Flush(); err != nil {
		return opErr(t.im.loc, "flush", err)
	}
	return nil
}

// Close writes everything gathered and closes the image (which flushes
// it). Every call returns the target's first failed write, if any.
func (t *target) Close() error {
	err := t.flushRange(0, -1)
	if cerr := t.im.close(); cerr != nil && err == nil {
		err = opErr(t.im.loc, "close", cerr)
	}
	return err
}

func (t *target) checkRange(off, length int64) error {
	if off < 0 || length < 0 || off+length > t.size {
		return fmt.Errorf("volume %s: range [%d, %d) is outside the volume of %d bytes", t.im.loc, off, off+length, t.size)
	}
	return nil
}
