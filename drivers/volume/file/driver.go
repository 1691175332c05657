// Package file is the volume driver for absolute paths: image files
// (driver name "file") and block devices (driver name "block"). Importing
// it registers it for volume.PathScheme.
//
// Image files snapshot as reflink clones (XFS, btrfs) or sparse copies;
// block devices do not snapshot here (LVM snapshots are not implemented:
// the test machines' kernel has no device mapper to prove them on).
package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/volback/volback/drivers/volume"
)

// Kinds of volume this driver serves; they are the driver names Stat reports.
const (
	KindFile  = "file"
	KindBlock = "block"
)

func init() { volume.Register(volume.PathScheme, Driver{}) }

// Driver serves image files and block devices by absolute path.
type Driver struct{}

var (
	_ volume.Driver = Driver{}
	_ volume.Placer = Driver{}
)

// Place puts new volume id in the directory location, as <id>.img.
func (Driver) Place(location, id string) (string, error) {
	dir, err := clean(location)
	if err != nil {
		return "", fmt.Errorf("volume location %q is not an absolute directory: give the directory where new image files go", location)
	}
	return filepath.Join(dir, id+".img"), nil
}

// clean checks that locator is an absolute path and returns it cleaned.
func clean(locator string) (string, error) {
	if !filepath.IsAbs(locator) {
		return "", fmt.Errorf("volume %q is not an absolute path: give the absolute path of the image file or block device", locator)
	}
	return filepath.Clean(locator), nil
}

// kindOf reports whether path is a regular file (KindFile) or a block device
// (KindBlock), following symlinks (/dev/disk/by-id/...). Anything else is
// refused with an error naming the path and what it is; a missing path
// wraps volume.ErrNotFound.
func kindOf(path string) (string, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", volume.Errorf(volume.ErrNotFound, "volume %q does not exist: check the path (use create to make a new image file)", path)
	}
	if err != nil {
		return "", fmt.Errorf("volume %q: %w", path, err)
	}
	m := st.Mode()
	switch {
	case m.IsRegular():
		return KindFile, nil
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0:
		return KindBlock, nil
	}
	what := "a special file"
	switch {
	case m.IsDir():
		what = "a directory"
	case m&fs.ModeCharDevice != 0:
		what = "a character device"
	case m&fs.ModeNamedPipe != 0:
		what = "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		what = "a socket"
	}
	return "", fmt.Errorf("%q is %s, not a regular file or block device", path, what)
}

// Stat opens the volume read-only to learn its size.
func (Driver) Stat(locator string) (volume.Info, error) {
	path, err := clean(locator)
	if err != nil {
		return volume.Info{}, err
	}
	h, err := open(path, false)
	if err != nil {
		return volume.Info{}, err
	}
	defer h.Close()
	return volume.Info{Locator: path, Driver: h.kind, Size: h.size}, nil
}

// OpenSource opens an image file, block device or snapshot for reading.
func (Driver) OpenSource(locator string) (volume.Source, error) {
	path, err := clean(locator)
	if err != nil {
		return nil, err
	}
	return open(path, false)
}

// OpenTarget opens an existing image file or block device for writing.
// It refuses one in use: a block device that is mounted or held
// exclusively (it opens it O_EXCL, so nothing can mount it meanwhile), an
// image file that backs a loop device, is used as swap, or is locked by
// another program (it takes an OFD write lock over the whole file, so
// QEMU cannot open it meanwhile). The driver never grows a file: callers
// check Size against what they will write.
func (Driver) OpenTarget(locator string) (volume.Target, error) {
	path, err := clean(locator)
	if err != nil {
		return nil, err
	}
	return open(path, true)
}

// CreateTarget creates a new sparse image file of size bytes (and its
// parent directory). It refuses an existing path so a restore never
// overwrites a volume it did not create. The new file reads as zeros.
func (Driver) CreateTarget(locator string, size int64) (volume.Target, error) {
	path, err := clean(locator)
	if err != nil {
		return nil, err
	}
	return create(path, size)
}

// Delete removes an image file. Block devices are never deleted.
func (Driver) Delete(locator string) error {
	path, err := clean(locator)
	if err != nil {
		return err
	}
	kind, err := kindOf(path)
	if err != nil {
		return err
	}
	if kind != KindFile {
		return fmt.Errorf("volume %q is a block device: volback deletes only image files it created; remove the device's data by hand if you mean to", path)
	}
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return volume.Errorf(volume.ErrNotFound, "volume %q does not exist", path)
		}
		return fmt.Errorf("delete volume %q: %w", path, err)
	}
	return nil
}

// InUse reports a mounted, swapped-on, loop-backed or locked volume.
func (Driver) InUse(locator string) (volume.Usage, error) {
	path, err := clean(locator)
	if err != nil {
		return volume.Usage{}, err
	}
	kind, err := kindOf(path)
	if err != nil {
		return volume.Usage{}, err
	}
	if kind == KindBlock {
		return blockUsage(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return volume.Usage{}, fmt.Errorf("volume %q: %w", path, err)
	}
	defer f.Close()
	return fileUsage(path, f)
}

// Snapshot clones an image file next to it (see snapshot.go). Block devices
// cannot be snapshotted by this driver.
func (Driver) Snapshot(ctx context.Context, locator, name string) (volume.Snapshot, error) {
	path, err := clean(locator)
	if err != nil {
		return volume.Snapshot{}, err
	}
	return snapshot(ctx, path, name)
}

// DeleteSnapshot removes the snapshot file of the volume.
func (Driver) DeleteSnapshot(locator, name string) error {
	path, err := clean(locator)
	if err != nil {
		return err
	}
	return deleteSnapshot(path, name)
}
