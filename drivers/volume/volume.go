// Package volume defines volume drivers: the block sources backups read and
// the targets restores write, plus what the service needs to manage them
// (size, in-use detection, snapshots). Drivers register by locator scheme
// (see Register): the file driver serves absolute paths (image files and
// block devices), the rbd driver rbd://pool/image. The service never looks
// inside a locator; it asks the registry.
package volume

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors drivers wrap (with Errorf) so callers can tell cases apart
// with errors.Is while the message stays the driver's own.
var (
	// ErrNotSupported is returned by capabilities a driver or volume lacks
	// (a raw block device cannot be snapshotted).
	ErrNotSupported = errors.New("not supported by this volume driver")
	// ErrNotFound: the volume (or snapshot) does not exist.
	ErrNotFound = errors.New("volume does not exist")
	// ErrInUse: something else holds the volume (a mount, a loop device, a
	// lock, a writer), so it may not be written or copied now.
	ErrInUse = errors.New("volume is in use")
)

// SectorSize is the unit of every volume size: a block volume is a whole
// number of 512-byte sectors, and drivers refuse anything else.
const SectorSize = 512

// Extent is a byte range [Offset, Offset+Length) of a volume.
type Extent struct {
	Offset int64
	Length int64
	// Zero marks a changed extent (ChangeTracker) that reads as zeros now:
	// its data was discarded since the snapshot, so it need not be read.
	Zero bool
}

// Info describes a volume as the catalog records it.
type Info struct {
	// Locator is the canonical locator to record ("/srv/a.img",
	// "/dev/vg0/db", "rbd://pool/image").
	Locator string
	// Driver is the kind of volume, shown to users: "file" (image file),
	// "block" (block device), "rbd".
	Driver string
	// Size is the volume size in bytes, a multiple of SectorSize.
	Size int64
}

// Usage says whether a volume is in use, by what, and how to free it.
type Usage struct {
	InUse bool
	// Reason names the holder: "mounted at /mnt/x", "backs /dev/loop3",
	// "write-locked by pid 123 (qemu-system-x86)".
	Reason string
	// Fix says what frees it: "unmount /mnt/x", "detach it: losetup -d /dev/loop3".
	Fix string
}

// Snapshot methods drivers report.
const (
	MethodReflink = "reflink"     // FICLONE: shared extents, instant, point in time
	MethodCopy    = "sparse-copy" // data extents copied, holes kept
	MethodRBD     = "rbd"         // an RBD snapshot
)

// Snapshot is a point-in-time copy of a volume made by its driver.
type Snapshot struct {
	Name string
	// Locator opens the snapshot, read-only, with OpenSource.
	Locator string
	// Method is how it was taken (MethodReflink, MethodCopy, ...).
	Method string
	Size   int64
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
// since one of the volume's snapshots (RBD diff). An incremental then reads
// only those; other sources are read and hashed whole.
type ChangeTracker interface {
	// Changed returns the extents written since the snapshot named
	// sinceSnapshot (the name given to Driver.Snapshot), sorted and inside
	// the volume; ErrNotSupported (wrapped) when it cannot tell, and the
	// caller reads everything.
	Changed(ctx context.Context, sinceSnapshot string) ([]Extent, error)
}

// Parallel is implemented by sources and targets whose I/O is a round
// trip over a network (RBD): a backup keeps InFlight() reads in flight at
// once instead of one, a restore as many writes, so latency does not bound
// the throughput.
type Parallel interface {
	InFlight() int
}

// Target is a volume opened for restore.
type Target interface {
	// Size is the volume size in bytes.
	Size() int64
	// WriteAt writes p at off; it is safe for concurrent use on distinct
	// ranges. Writes past Size are refused: a target never grows.
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

// Driver serves the volumes of one locator scheme. Every method names the
// volume by its locator; errors name it too and say what to do, wrapping
// ErrNotFound, ErrInUse or ErrNotSupported where one applies. Methods are
// safe for concurrent use.
type Driver interface {
	// Stat describes an existing volume. A volume whose size is not a
	// multiple of SectorSize is refused.
	Stat(locator string) (Info, error)
	// OpenSource opens a volume, or a snapshot's locator, for reading.
	OpenSource(locator string) (Source, error)
	// OpenTarget opens an existing volume for writing. It refuses a volume
	// in use (ErrInUse) and keeps others from taking it while it is open
	// where the driver can (an exclusive open, a lock).
	OpenTarget(locator string) (Target, error)
	// CreateTarget creates a new volume of size bytes that reads as zeros
	// (Fresh) and opens it for writing. It refuses an existing locator.
	CreateTarget(locator string, size int64) (Target, error)
	// Delete removes a volume volback created. Missing: ErrNotFound.
	Delete(locator string) error
	// InUse reports whether something else holds the volume.
	InUse(locator string) (Usage, error)
	// Snapshot takes a point-in-time copy named name; ErrNotSupported
	// when the volume cannot be snapshotted, ErrInUse when it changed
	// while a copy was made and the copy is therefore not point in time.
	Snapshot(ctx context.Context, locator, name string) (Snapshot, error)
	// DeleteSnapshot removes the volume's snapshot name. Missing: ErrNotFound.
	DeleteSnapshot(locator, name string) error
}

// Errorf returns fmt.Errorf(format, a...) that errors.Is also matches
// against kind (ErrNotFound, ErrInUse, ErrNotSupported); the message is
// unchanged.
func Errorf(kind error, format string, a ...any) error {
	return &kindError{err: fmt.Errorf(format, a...), kind: kind}
}

type kindError struct{ err, kind error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }
