//go:build ceph

package rbd

import (
	"fmt"

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
// (maxSegment bytes, aligned, never across objects; see
// volume.Gatherer), so a write fails in the WriteAt, Zero, Sync or Close
// that flushes it, and every later call returns that error.
type target struct {
	im    *image
	size  int64
	fresh bool
	g     *volume.Gatherer
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
	seg := max(min(int64(maxSegment), int64(info.Obj_size)), 4096)
	t := &target{im: im, size: size, fresh: fresh}
	t.g = volume.NewGatherer(size, seg, maxPending, t.write, nil)
	return t, nil
}

func (t *target) Size() int64   { return t.size }
func (t *target) InFlight() int { return inFlight }
func (t *target) Fresh() bool   { return t.fresh }

// WriteAt gathers p into its segments, writing those it completes. Writes
// past the end are refused: an image is never grown.
func (t *target) WriteAt(p []byte, off int64) (int, error) {
	if err := t.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	return t.g.WriteAt(p, off)
}

func (t *target) write(off int64, p []byte) error {
	if _, err := t.im.WriteAt(p, off); err != nil {
		return opErr(t.im.loc, fmt.Sprintf("write at byte %d of", off), err)
	}
	return nil
}

// Zero discards the range, after writing what is gathered for it: whole
// objects are removed, partial ones zeroed (exactly: see conn.go,
// rbd_skip_partial_discard).
func (t *target) Zero(off, length int64) error {
	if err := t.checkRange(off, length); err != nil {
		return err
	}
	if err := t.g.Flush(off, length); err != nil || length == 0 {
		return err
	}
	if _, err := t.im.Discard(uint64(off), uint64(length)); err != nil {
		return t.g.Fail(opErr(t.im.loc, fmt.Sprintf("discard bytes %d-%d of", off, off+length), err))
	}
	return nil
}

// Sync writes everything gathered and flushes librbd's cache.
func (t *target) Sync() error {
	if err := t.g.Flush(0, -1); err != nil {
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
	err := t.g.Flush(0, -1)
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
