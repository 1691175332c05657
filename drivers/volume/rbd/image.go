//go:build ceph

package rbd

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/ceph/go-ceph/rbd"

	"github.com/volback/volback/drivers/volume"
)

// inFlight is how many reads (or writes) a backup (or restore) should keep
// in flight on one image: each is a round trip to an OSD, so one at a time
// leaves both the network and the OSDs idle most of the time (see
// docs/BENCHMARKS.md, W7). go-ceph has no AIO for RBD, so callers keep
// them in flight from goroutines of their own on one handle.
const inFlight = 16

// source is an image, or a snapshot of one, opened read-only.
type source struct {
	im   *image
	size int64
}

var (
	_ volume.Source        = (*source)(nil)
	_ volume.ChangeTracker = (*source)(nil)
	_ volume.Parallel      = (*source)(nil)
	_ volume.Parallel      = (*target)(nil)
	_ volume.Target        = (*target)(nil)
)

func openSource(l Locator) (*source, error) {
	im, err := openImage(l, false)
	if err != nil {
		return nil, err
	}
	size, err := im.size()
	if err != nil {
		im.close()
		return nil, err
	}
	return &source{im: im, size: size}, nil
}

func (s *source) Size() int64   { return s.size }
func (s *source) InFlight() int { return inFlight }
func (s *source) Close() error  { return s.im.close() }

// ReadAt reads through librbd; it is safe for concurrent use (librbd's
// image handles are thread safe).
func (s *source) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read volume %s at %d: negative offset", s.im.loc, off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), s.size-off)]
	n, err := s.im.ReadAt(want, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, opErr(s.im.loc, fmt.Sprintf("read at byte %d of", off), err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Allocated is the image's allocation: a diff against nothing, in whole
// objects (from the object map when the image has fast-diff), including a
// clone's parent. Everything else reads as zeros.
func (s *source) Allocated(ctx context.Context) ([]volume.Extent, error) {
	exts, err := s.diff(ctx, rbd.NoSnapshot, rbd.EnableWholeObject, rbd.IncludeParent)
	if err != nil {
		return nil, err
	}
	out := exts[:0]
	for _, e := range exts {
		if !e.Zero {
			out = append(out, e)
		}
	}
	return out, nil
}

// Changed lists what changed between the image's snapshot since and the
// point the source is opened at (its snapshot, or now). Extents whose
// objects were discarded are marked Zero. A missing snapshot is ErrNotFound.
func (s *source) Changed(ctx context.Context, since string) ([]volume.Extent, error) {
	if err := checkSnapshotName(s.im.loc.String(), since); err != nil {
		return nil, err
	}
	exts, err := s.diff(ctx, since, rbd.DisableWholeObject, rbd.ExcludeParent)
	if errno(err) == -2 {
		return nil, volume.Errorf(volume.ErrNotFound, "changes of volume %s since snapshot %q: that snapshot does not exist (deleted?); read the whole volume instead", s.im.loc, since)
	}
	return exts, err
}

// diff runs rbd_diff_iterate2 over the whole image from snapshot from (or
// from nothing) and returns the extents sorted, merged and cut at the
// image's size.
func (s *source) diff(ctx context.Context, from string, whole rbd.DiffWholeObject, parent rbd.DiffIncludeParent) ([]volume.Extent, error) {
	var out []volume.Extent
	err := s.im.DiffIterate(rbd.DiffIterateConfig{
		SnapName: from, Offset: 0, Length: uint64(s.size), WholeObject: whole, IncludeParent: parent,
		Callback: func(off, length uint64, exists int, _ any) int {
			if ctx.Err() != nil {
				return -125 // ECANCELED: stops the iteration
			}
			out = addExtent(out, volume.Extent{Offset: int64(off), Length: int64(length), Zero: exists == 0}, s.size)
			return 0
		},
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err != nil {
		if errno(err) == -2 {
			return nil, err // the caller says which snapshot is missing
		}
		return nil, opErr(s.im.loc, "diff", err)
	}
	return out, nil
}

// addExtent appends e, cut at size, merging it into the last extent when
// it continues it with the same Zero mark. librbd reports extents in order.
func addExtent(out []volume.Extent, e volume.Extent, size int64) []volume.Extent {
	e.Length = min(e.Length, size-e.Offset)
	if e.Length <= 0 {
		return out
	}
	if n := len(out); n > 0 {
		last := &out[n-1]
		if last.Offset+last.Length == e.Offset && last.Zero == e.Zero {
			last.Length += e.Length
			return out
		}
	}
	return append(out, e)
}
