package file

import (
	"context"
	"errors"
	"fmt"

	"github.com/volback/volback/drivers/volume"
	"golang.org/x/sys/unix"
)

// Allocated returns the data extents of a sparse image file using
// SEEK_DATA/SEEK_HOLE, so a backup never reads its holes. Block devices, and
// filesystems without SEEK_DATA, report the whole volume.
func (h *handle) Allocated(ctx context.Context) ([]volume.Extent, error) {
	if h.size == 0 {
		return nil, nil
	}
	if h.kind != KindFile {
		return []volume.Extent{{Offset: 0, Length: h.size}}, nil
	}
	return dataExtents(ctx, int(h.f.Fd()), h.path, h.size)
}

// dataExtents lists the data (non-hole) extents of the first size bytes of
// the open file fd, or the whole range where the filesystem cannot tell.
func dataExtents(ctx context.Context, fd int, path string, size int64) ([]volume.Extent, error) {
	var exts []volume.Extent
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return []volume.Extent{{Offset: 0, Length: size}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("find data in volume %q at %d: %w", path, off, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("find hole in volume %q at %d: %w", path, data, err)
		}
		hole = min(hole, size)
		if data >= hole {
			break // the file shrank while we looked
		}
		if n := len(exts); n > 0 && exts[n-1].Offset+exts[n-1].Length == data {
			exts[n-1].Length += hole - data
		} else {
			exts = append(exts, volume.Extent{Offset: data, Length: hole - data})
		}
		off = hole
	}
	return exts, nil
}
