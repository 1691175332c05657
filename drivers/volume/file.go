package volume

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Volume kinds served by the file driver.
const (
	KindFile  = "file"
	KindBlock = "block"
)

// Kind reports whether path is a regular file ("file") or a block device
// ("block"), following symlinks (/dev/disk/by-id/...). Anything else is
// refused with an error naming the path and what it is.
func Kind(path string) (string, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("volume %q does not exist: check the path (use create to make a new image file)", path)
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

// file is an image file or block device, used both as Source and Target.
type file struct {
	f     *os.File
	path  string
	kind  string
	size  int64
	fresh bool
}

var (
	_ Source = (*file)(nil)
	_ Target = (*file)(nil)
)

// OpenSource opens an image file or block device for backup.
func OpenSource(path string) (Source, error) {
	return openFile(path, os.O_RDONLY)
}

// OpenTarget opens an existing image file or block device for restore. The
// driver never grows a file: callers must check Size against the backup.
func OpenTarget(path string) (Target, error) {
	return openFile(path, os.O_RDWR)
}

// CreateTarget creates a new sparse image file of size bytes (and its parent
// directory). It refuses an existing path so a restore never overwrites a
// volume it did not create. The new file reads as zeros: Fresh is true.
func CreateTarget(path string, size int64) (Target, error) {
	if size < 0 {
		return nil, fmt.Errorf("create volume %q: negative size %d", path, size)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create volume %q: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create volume %q: the path already exists; choose a new path or restore into the existing volume instead", path)
	}
	if err != nil {
		return nil, fmt.Errorf("create volume %q: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create volume %q of %d bytes: %w", path, size, err)
	}
	return &file{f: f, path: path, kind: KindFile, size: size, fresh: true}, nil
}

func openFile(path string, flag int) (*file, error) {
	kind, err := Kind(path)
	if err != nil {
		return nil, err
	}
	if kind == KindBlock && flag&os.O_RDWR != 0 {
		// O_EXCL on a block device fails if it is mounted or held by
		// another exclusive user: never restore under a live filesystem.
		flag |= unix.O_EXCL
	}
	f, err := os.OpenFile(path, flag, 0)
	if errors.Is(err, unix.EBUSY) {
		return nil, fmt.Errorf("open volume %q: the device is in use (mounted, or held by another program): unmount or detach it first", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open volume %q: %w", path, err)
	}
	v := &file{f: f, path: path, kind: kind}
	if v.size, err = v.measure(); err != nil {
		f.Close()
		return nil, fmt.Errorf("size of volume %q: %w", path, err)
	}
	return v, nil
}

// measure asks the kernel for a block device's size (BLKGETSIZE64, falling
// back to seeking to the end) and stats a regular file.
func (v *file) measure() (int64, error) {
	if v.kind == KindFile {
		st, err := v.f.Stat()
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	if n, err := unix.IoctlGetUint64(int(v.f.Fd()), unix.BLKGETSIZE64); err == nil {
		return int64(n), nil
	}
	return v.f.Seek(0, io.SeekEnd)
}

func (v *file) Size() int64  { return v.size }
func (v *file) Fresh() bool  { return v.fresh }
func (v *file) Close() error { return v.f.Close() }

// ReadAt uses pread, so concurrent reads do not share a file offset.
func (v *file) ReadAt(p []byte, off int64) (int, error) {
	n, err := v.f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read volume %q at %d: %w", v.path, off, err)
	}
	return n, err
}

// WriteAt refuses writes past Size: a target is never grown.
func (v *file) WriteAt(p []byte, off int64) (int, error) {
	if err := v.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := v.f.WriteAt(p, off)
	if err != nil {
		err = fmt.Errorf("write volume %q at %d: %w", v.path, off, err)
	}
	return n, err
}

func (v *file) Sync() error {
	if err := v.f.Sync(); err != nil {
		return fmt.Errorf("sync volume %q: %w", v.path, err)
	}
	return nil
}

func (v *file) checkRange(off, length int64) error {
	if off < 0 || length < 0 || off+length > v.size {
		return fmt.Errorf("volume %q: range [%d, %d) is outside the volume of %d bytes", v.path, off, off+length, v.size)
	}
	return nil
}
