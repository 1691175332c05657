package file

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/volback/volback/drivers/volume"
	"golang.org/x/sys/unix"
)

// handle is an open image file or block device, used as Source and Target.
type handle struct {
	f     *os.File
	path  string
	kind  string
	size  int64
	fresh bool
	// A regular file is read (backup) or written (restore, its writes
	// gathered by g) with O_DIRECT where its filesystem allows: no copy
	// through the page cache, nor a volume's worth of it evicted. nil for
	// a block device.
	direct *direct
	g      *volume.Gatherer
}

var (
	_ volume.Source   = (*handle)(nil)
	_ volume.Target   = (*handle)(nil)
	_ volume.Parallel = (*handle)(nil)
)

// open opens path for reading, or for writing when write is set, refusing
// (for writing) a volume in use. See Driver.OpenTarget.
func open(path string, write bool) (*handle, error) {
	kind, err := kindOf(path)
	if err != nil {
		return nil, err
	}
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
		if kind == KindBlock {
			// O_EXCL on a block device fails if it is mounted or held by
			// another exclusive user, and keeps it from being mounted
			// while we write.
			flag |= unix.O_EXCL
		}
	}
	f, err := os.OpenFile(path, flag, 0)
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ETXTBSY) {
		return nil, inUse(path, kind, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("open volume %q: %w", path, err)
	}
	h := &handle{f: f, path: path, kind: kind}
	if write && kind == KindFile {
		if err := h.claim(); err != nil {
			f.Close()
			return nil, err
		}
	}
	if h.size, err = h.measure(); err != nil {
		f.Close()
		return nil, fmt.Errorf("size of volume %q: %w", path, err)
	}
	if err := volume.CheckSize(path, h.size, fmt.Sprintf("if it really is a disk image, round it up (truncate -s %d %s)", volume.RoundUp(h.size), path)); err != nil {
		f.Close()
		return nil, err
	}
	if write && kind == KindFile {
		h.writeDirect()
	} else if kind == KindFile {
		h.direct = openDirect(path, os.O_RDONLY, f)
	}
	return h, nil
}

// writeDirect has the image file written through O_DIRECT where its
// filesystem allows.
func (h *handle) writeDirect() {
	if h.direct = openDirect(h.path, os.O_WRONLY, h.f); h.direct != nil {
		h.g = h.direct.gatherer(h.size)
	}
}

// claim takes an OFD write lock over the whole image file, as QEMU checks
// for before it opens an image, then refuses an image that a lock, a loop
// device or swap holds.
//
// A filesystem that cannot lock (NFS without a lock manager) is written
// unlocked: the lock protects against others, it is not needed to write.
func (h *handle) claim() error {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	err := unix.FcntlFlock(h.f.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return inUse(h.path, h.kind, h.f)
	}
	if err != nil && !noLocks(err) {
		return fmt.Errorf("lock volume %q: %w", h.path, err)
	}
	u, err := fileUsage(h.path, h.f)
	if err != nil {
		return err
	}
	if u.InUse {
		return refusal(h.path, u)
	}
	return nil
}

// inUse is the refusal for a volume found busy: it asks what holds it.
func inUse(path, kind string, f *os.File) error {
	var u volume.Usage
	var err error
	if kind == KindBlock {
		u, err = blockUsage(path)
	} else {
		if f == nil {
			if f, err = os.Open(path); err != nil {
				return volume.Errorf(volume.ErrInUse, "volume %q is in use by another program: stop it, then try again", path)
			}
			defer f.Close()
		}
		u, err = fileUsage(path, f)
	}
	if err != nil || !u.InUse {
		return volume.Errorf(volume.ErrInUse, "volume %q is in use by another program (mounted, locked or held open): stop or detach it, then try again", path)
	}
	return refusal(path, u)
}

func refusal(path string, u volume.Usage) error {
	return volume.Errorf(volume.ErrInUse, "volume %q is in use: it %s; %s, then try again", path, u.Reason, u.Fix)
}

// create makes a new sparse image file of size bytes. See Driver.CreateTarget.
func create(path string, size int64) (*handle, error) {
	if err := volume.CheckSize(path, size, "give a size in whole sectors"); err != nil {
		return nil, fmt.Errorf("create %w", err)
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
	h := &handle{f: f, path: path, kind: KindFile, size: size, fresh: true}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); noLocks(err) {
		err = nil
	}
	if err == nil {
		err = f.Truncate(size)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create volume %q of %d bytes: %w", path, size, err)
	}
	h.writeDirect()
	return h, nil
}

// measure asks the kernel for a block device's size (BLKGETSIZE64, falling
// back to seeking to the end) and stats a regular file.
func (h *handle) measure() (int64, error) {
	if h.kind == KindFile {
		st, err := h.f.Stat()
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	if n, err := unix.IoctlGetUint64(int(h.f.Fd()), unix.BLKGETSIZE64); err == nil {
		return int64(n), nil
	}
	return h.f.Seek(0, io.SeekEnd)
}

func (h *handle) Size() int64 { return h.size }
func (h *handle) Fresh() bool { return h.fresh }

// InFlight is how many writes a restore, or reads a backup, keeps in
// flight: several when they are direct (each waits for the disk, with no
// read-ahead or write-back behind it), else the pipeline's default.
func (h *handle) InFlight() int {
	switch {
	case h.g != nil:
		return directInFlight
	case h.direct != nil:
		return directReaders
	}
	return 0
}

// Close writes what is gathered and releases the file and with it the
// lock claim took. It returns the first failed write, if any.
func (h *handle) Close() error {
	var err error
	if h.g != nil {
		err = h.g.Flush(0, -1)
	}
	if h.direct != nil {
		h.direct.f.Close()
	}
	if cerr := h.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadAt uses pread, so concurrent reads do not share a file offset.
func (h *handle) ReadAt(p []byte, off int64) (int, error) {
	if h.g != nil {
		if err := h.g.Flush(off, int64(len(p))); err != nil {
			return 0, err
		}
	}
	n, ok, err := 0, false, error(nil)
	if h.direct != nil && h.g == nil {
		n, ok, err = h.direct.read(p, off)
	}
	if !ok {
		n, err = h.f.ReadAt(p, off)
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read volume %q at %d: %w", h.path, off, err)
	}
	return n, err
}

// WriteAt refuses writes past Size: a target is never grown.
func (h *handle) WriteAt(p []byte, off int64) (int, error) {
	if err := h.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	if h.g != nil {
		return h.g.WriteAt(p, off)
	}
	n, err := h.f.WriteAt(p, off)
	if err != nil {
		err = fmt.Errorf("write volume %q at %d: %w", h.path, off, err)
	}
	return n, err
}

// Sync writes what is gathered and makes the file durable.
func (h *handle) Sync() error {
	if h.g != nil {
		if err := h.g.Flush(0, -1); err != nil {
			return err
		}
	}
	if err := h.f.Sync(); err != nil {
		return fmt.Errorf("sync volume %q: %w", h.path, err)
	}
	return nil
}

func (h *handle) checkRange(off, length int64) error {
	if off < 0 || length < 0 || off+length > h.size {
		return fmt.Errorf("volume %q: range [%d, %d) is outside the volume of %d bytes", h.path, off, off+length, h.size)
	}
	return nil
}

// noLocks reports the errors of a filesystem that does not do fcntl locks.
func noLocks(err error) bool {
	return errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}
