package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/volback/volback/drivers/volume"
	"golang.org/x/sys/unix"
)

// A snapshot of /srv/a.img named s1 is the file /srv/a.img@s1: next to the
// image because a reflink clone must stay on the same filesystem, and
// visible so nobody wonders where the disk space went.
func snapshotPath(path, name string) string { return path + "@" + name }

var snapshotName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func checkName(path, name string) error {
	if !snapshotName.MatchString(name) {
		return fmt.Errorf("snapshot name %q for volume %q: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit", name, path)
	}
	return nil
}

// copyChunk bounds one copy_file_range call, so cancellation is prompt.
const copyChunk = 8 << 20

// snapshot clones the image at path into snapshotPath(path, name): a
// reflink (FICLONE) where the filesystem shares extents (XFS, btrfs),
// which is instant and point in time even under a writer; else a sparse
// copy of its data extents, which is point in time only if nothing wrote
// the image meanwhile, so a copy during which the image changed is
// refused (ErrInUse) and removed. Changes are detected by the image's
// size, mtime and ctime (see settledStat); a writer through a shared
// mapping that keeps dirtying pages it already dirtied goes unseen.
func snapshot(ctx context.Context, path, name string) (volume.Snapshot, error) {
	if err := checkName(path, name); err != nil {
		return volume.Snapshot{}, err
	}
	kind, err := kindOf(path)
	if err != nil {
		return volume.Snapshot{}, err
	}
	if kind == KindBlock {
		return volume.Snapshot{}, volume.Errorf(volume.ErrNotSupported,
			"volume %q is a block device: the file driver cannot snapshot block devices (LVM snapshots are not implemented); back it up while nothing writes it, or copy it to an image file on XFS or btrfs first", path)
	}
	src, err := os.Open(path)
	if err != nil {
		return volume.Snapshot{}, fmt.Errorf("snapshot volume %q: %w", path, err)
	}
	defer src.Close()
	var before unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &before); err != nil {
		return volume.Snapshot{}, fmt.Errorf("snapshot volume %q: %w", path, err)
	}
	if err := volume.CheckSize(path, before.Size, "a snapshot needs whole sectors"); err != nil {
		return volume.Snapshot{}, err
	}
	dst := snapshotPath(path, name)
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if errors.Is(err, fs.ErrExist) {
		return volume.Snapshot{}, fmt.Errorf("snapshot %q of volume %q already exists (%s): choose another name or delete that snapshot first", name, path, dst)
	}
	if err != nil {
		return volume.Snapshot{}, fmt.Errorf("snapshot volume %q: %w", path, err)
	}
	s := volume.Snapshot{Name: name, Locator: dst, Method: volume.MethodReflink}
	err = unix.IoctlFileClone(int(out.Fd()), int(src.Fd()))
	if err != nil && cloneUnsupported(err) {
		s.Method = volume.MethodCopy
		if before, err = settledStat(ctx, src, path, name); err == nil {
			err = sparseCopy(ctx, src, out, path, before.Size)
		}
		if err == nil {
			var after unix.Stat_t
			if err = unix.Fstat(int(src.Fd()), &after); err == nil && changed(before, after) {
				err = volume.Errorf(volume.ErrInUse, "volume %q changed while it was copied for snapshot %q, so the copy is not one point in time; its filesystem has no reflink (FICLONE), so a snapshot needs the image idle: stop what writes it and try again, or keep the image on XFS or btrfs for instant snapshots", path, name)
			}
		}
	} else if err != nil {
		err = fmt.Errorf("snapshot volume %q: reflink clone to %s: %w", path, dst, err)
	}
	if err == nil {
		var st unix.Stat_t
		if err = unix.Fstat(int(out.Fd()), &st); err == nil {
			s.Size = st.Size
			err = out.Sync()
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(dst))
	}
	if err != nil {
		os.Remove(dst)
		return volume.Snapshot{}, err
	}
	return s, nil
}

// cloneUnsupported reports the errors FICLONE gives on filesystems that
// cannot share extents (ext4, tmpfs), across filesystems, or for files
// they cannot clone.
func cloneUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTTY, unix.EXDEV, unix.EINVAL, unix.ENOSYS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// settledStat returns the image's stat once the coarse clock that stamps
// writes has moved past its mtime and ctime. Without that, on kernels
// without multigrain timestamps (before 6.13), every write of a copy that
// takes less than one clock tick stamps the same time as the write before
// it, and the change check sees nothing. An image whose stamps move while
// we wait is being written: refused (ErrInUse). Stamps in the future (a
// clock set back) are accepted after a short wait, since any write then
// stamps an earlier time, which the check sees.
func settledStat(ctx context.Context, f *os.File, path, name string) (unix.Stat_t, error) {
	var first unix.Stat_t
	for deadline := time.Now().Add(100 * time.Millisecond); ; {
		var st unix.Stat_t
		var now unix.Timespec
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return st, fmt.Errorf("snapshot volume %q: %w", path, err)
		}
		if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &now); err != nil {
			return st, fmt.Errorf("snapshot volume %q: read the clock: %w", path, err)
		}
		if first.Ino == 0 {
			first = st
		} else if changed(first, st) {
			return st, volume.Errorf(volume.ErrInUse, "volume %q is being written, so a copy for snapshot %q would not be one point in time; its filesystem has no reflink (FICLONE), so a snapshot needs the image idle: stop what writes it and try again, or keep the image on XFS or btrfs for instant snapshots", path, name)
		}
		if later(now, st.Mtim) && later(now, st.Ctim) || time.Now().After(deadline) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func later(a, b unix.Timespec) bool {
	return a.Sec > b.Sec || a.Sec == b.Sec && a.Nsec > b.Nsec
}

func changed(a, b unix.Stat_t) bool {
	return a.Size != b.Size || a.Mtim != b.Mtim || a.Ctim != b.Ctim
}

// sparseCopy copies the data extents of the first size bytes of src into
// out (made size bytes long first), so holes stay holes.
func sparseCopy(ctx context.Context, src, out *os.File, path string, size int64) error {
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("snapshot volume %q: %w", path, err)
	}
	exts, err := dataExtents(ctx, int(src.Fd()), path, size)
	if err != nil {
		return err
	}
	for _, e := range exts {
		for off, end := e.Offset, e.Offset+e.Length; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := copyRange(src, out, off, min(end-off, copyChunk))
			if err != nil {
				return fmt.Errorf("snapshot volume %q: copying at %d: %w", path, off, err)
			}
			if n == 0 {
				return fmt.Errorf("snapshot volume %q: it shrank to %d bytes while it was copied; try again", path, off)
			}
			off += n
		}
	}
	return nil
}

// copyRange copies up to n bytes at off with copy_file_range (in the
// kernel, no round trip through user memory), falling back to read+write
// where the kernel refuses it.
func copyRange(src, out *os.File, off, n int64) (int64, error) {
	roff, woff := off, off
	c, err := unix.CopyFileRange(int(src.Fd()), &roff, int(out.Fd()), &woff, int(n), 0)
	if err == nil {
		return int64(c), nil
	}
	if !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EOPNOTSUPP) {
		return 0, err
	}
	buf := make([]byte, min(n, 1<<20))
	r, err := src.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return 0, err
	}
	if _, err := out.WriteAt(buf[:r], off); err != nil {
		return 0, err
	}
	return int64(r), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// deleteSnapshot removes the snapshot file of the image at path.
func deleteSnapshot(path, name string) error {
	if err := checkName(path, name); err != nil {
		return err
	}
	dst := snapshotPath(path, name)
	if err := os.Remove(dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return volume.Errorf(volume.ErrNotFound, "snapshot %q of volume %q does not exist (no file %s)", name, path, dst)
		}
		return fmt.Errorf("delete snapshot %q of volume %q: %w", name, path, err)
	}
	return nil
}
