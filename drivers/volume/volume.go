// Package volume defines volume drivers: the block sources backups read and
// the targets restores write. The file driver serves image files and block
// devices; the rbd driver (ceph build tag) serves Ceph RBD images.
package volume

import (
	"context"
	"errors"
)

// ErrNotSupported is returned by optional capabilities a driver lacks.
var ErrNotSupported = errors.New("not supported by this volume driver")

// Extent is a byte range [Offset, Offset+Length) of a volume.
type Extent struct {
	Offset int64
	Length int64
}

// Source is a volume opened for backup.
type Source interface {
	// Size is the volume size in bytes.
	Size() int64
	// ReadAt reads len(p) bytes at off; it is safe for concurrent use.
	ReadAt(p []byte, off int64) (int, error)
	// Allocated returns the ranges that may hold data, sorted and
	// non-overlapping; everything outside them reads as zeros (holes of a
	// sparse file). A driver that cannot tell returns the whole volume.
	Allocated(ctx context.Context) ([]Extent, error)
	Close() error
}

// ChangeTracker is implemented by sources that can report the extents changed
// since a snapshot taken at the parent backup (RBD diff). An incremental then
// reads only those; other sources are read and hashed whole.
type ChangeTracker interface {
	Changed(ctx context.Context, sinceSnapshot string) ([]Extent, error)
}

// Target is a volume opened for restore.
type Target interface {
	// Size is the volume size in bytes.
	Size() int64
	// WriteAt writes p at off; it is safe for concurrent use on distinct ranges.
	WriteAt(p []byte, off int64) (int, error)
	// Zero makes [off, off+length) read as zeros, deallocating where it can
	// (punch hole, discard). A fresh target whose ranges are already holes
	// need not be zeroed: see Fresh.
	Zero(off, length int64) error
	// Fresh reports whether the target was just created and reads as zeros
	// everywhere, so a restore can skip zero chunks entirely.
	Fresh() bool
	// Sync makes everything written durable.
	Sync() error
	Close() error
}
