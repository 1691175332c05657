package volume

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Allocated returns the data extents of a sparse image file using
// SEEK_DATA/SEEK_HOLE, so a backup never reads its holes. Block devices, and
// filesystems without SEEK_DATA, report the whole volume.
func (v *file) Allocated(ctx context.Context) ([]Extent, error) {
	whole := []Extent{{0, v.size}}
	if v.size == 0 {
		return nil, nil
	}
	if v.kind != KindFile {
		return whole, nil
	}
	fd := int(v.f.Fd())
	var exts []Extent
	for off := int64(0); off < v.size; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return whole, nil
		}
		if err != nil {
			return nil, fmt.Errorf("find data in volume %q at %d: %w", v.path, off, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("find hole in volume %q at %d: %w", v.path, data, err)
		}
		hole = min(hole, v.size)
		if data >= hole {
			break // the file shrank while we looked
		}
		if n := len(exts); n > 0 && exts[n-1].Offset+exts[n-1].Length == data {
			exts[n-1].Length += hole - data
		} else {
			exts = append(exts, Extent{data, hole - data})
		}
		off = hole
	}
	return exts, nil
}
