// Package fs serves backups as read-only image files over FUSE (go-fuse/v2):
// MOUNTPOINT/by-id/<backup-id>.img and
// MOUNTPOINT/by-volume/<volume-name>/<created-at>_<backup-name-or-id>.img.
package fs

import (
	"context"
	"io"
	"time"
)

// Entry is one available backup as the mount shows it.
type Entry struct {
	ID         string
	Name       string // may be empty: the id is used in by-volume names then
	VolumeID   string // tells apart volumes that share a name
	VolumeName string
	CreatedAt  time.Time
	Size       int64 // volume bytes = image file size
}

// Image is an opened backup image. ReadAt is safe for concurrent use.
type Image interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// SliceReader is an Image that can answer a read without copying: with
// its bytes where they already are (a cache), held until release. Read
// uses it when the Image has it; go-fuse then writes the reply with
// writev, straight from those buffers.
type SliceReader interface {
	// ReadSlices returns the n bytes at off (fewer, with io.EOF, at the
	// end of the image) as slices valid until release is called. release
	// is never nil, even with an error, and may be called more than once.
	ReadSlices(off int64, n int) (vecs [][]byte, release func(), err error)
}

// Source is what the filesystem reads from: in volback, the service over
// the catalog and chunk store. Backups is called on every directory listing
// or lookup (cheap, cached briefly), so new and deleted backups show up
// without remounting.
type Source interface {
	Backups(ctx context.Context) ([]Entry, error)
	OpenImage(ctx context.Context, id string) (Image, error)
}
