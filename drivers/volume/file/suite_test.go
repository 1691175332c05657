package file

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/drivers/volume/volumetest"
	"golang.org/x/sys/unix"
)

// imageHolders are the ways an image file is put in use: by a loop device,
// by locks of another process (an OFD write lock, QEMU's lock bytes, a
// POSIX read lock) and, where qemu-utils is installed, by a real qemu-nbd.
func imageHolders() []volumetest.Holder {
	lockHolder := func(kind, how string) func(t *testing.T, loc string) (string, func()) {
		return func(t *testing.T, loc string) (string, func()) {
			pid, release := holdIn(t, kind+":"+loc)
			return fmt.Sprintf("%s by pid %d", how, pid), release
		}
	}
	return []volumetest.Holder{
		{Name: "OFDWriteLock", Hold: lockHolder("ofd-write", "write-locked")},
		{Name: "QEMULockBytes", Hold: lockHolder("qemu", "write-locked")},
		{Name: "POSIXReadLock", Hold: lockHolder("posix-read", "read-locked")},
		{Name: "LoopDevice", Hold: func(t *testing.T, loc string) (string, func()) {
			dev, release := losetup(t, loc)
			return "backs " + dev, release
		}},
		{Name: "QEMUNBD", Hold: func(t *testing.T, loc string) (string, func()) {
			requireTool(t, "qemu-nbd")
			cmd := exec.Command("qemu-nbd", "-f", "raw", "-k", filepath.Join(t.TempDir(), "nbd.sock"), loc)
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			release := sync.OnceFunc(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
			t.Cleanup(release)
			var st syscall.Stat_t
			if err := syscall.Stat(loc, &st); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "qemu-nbd to lock "+loc, func() bool { return len(locksOn(st.Dev, st.Ino)) > 0 })
			return fmt.Sprintf("write-locked by pid %d (qemu-nbd)", cmd.Process.Pid), release
		}},
	}
}

func imageHarness(dir func(t *testing.T) string, method string) volumetest.Harness {
	n := 0
	var mu sync.Mutex
	next := func(t *testing.T) string {
		mu.Lock()
		defer mu.Unlock()
		n++
		return filepath.Join(dir(t), fmt.Sprintf("vol%d.img", n))
	}
	return volumetest.Harness{
		Driver: KindFile,
		New: func(t *testing.T, size int64) string {
			p := next(t)
			sparseFile(t, p, size)
			return p
		},
		Free:           next,
		Sparse:         true,
		SnapshotMethod: method,
		Holders:        imageHolders(),
	}
}

// TestImageFiles runs the suite on image files in the test's temporary
// directory. Its filesystem here is ext4, which cannot reflink, so
// snapshots are sparse copies (the suite checks the method reported).
func TestImageFiles(t *testing.T) {
	tmp := t.TempDir()
	method := volume.MethodCopy
	if supportsReflink(t, tmp) {
		method = volume.MethodReflink
	}
	t.Logf("snapshots in %s are %s", tmp, method)
	volumetest.Run(t, Driver{}, imageHarness(func(*testing.T) string { return tmp }, method))
}

// TestImageFilesOnXFS runs the suite on image files on a loop-mounted XFS
// made by the test, where snapshots are reflink clones.
func TestImageFilesOnXFS(t *testing.T) {
	dir := xfsDir(t)
	volumetest.Run(t, Driver{}, imageHarness(func(*testing.T) string { return dir }, volume.MethodReflink))
}

// TestBlockDevices runs the suite on loop block devices: driver "block",
// no holes reported, no snapshots, in use when mounted or held O_EXCL.
func TestBlockDevices(t *testing.T) {
	requireRoot(t)
	volumetest.Run(t, Driver{}, volumetest.Harness{
		Driver: KindBlock,
		New: func(t *testing.T, size int64) string {
			backing := filepath.Join(t.TempDir(), "backing.img")
			sparseFile(t, backing, size)
			dev, _ := losetup(t, backing)
			return dev
		},
		Holders: []volumetest.Holder{
			{Name: "Mounted", Hold: func(t *testing.T, loc string) (string, func()) {
				requireTool(t, "mkfs.ext4")
				sh(t, "mkfs.ext4", "-q", "-F", loc)
				dir, release := mountAt(t, loc, "")
				return "mounted at " + dir, release
			}},
			{Name: "HeldExclusively", Hold: func(t *testing.T, loc string) (string, func()) {
				pid, release := holdIn(t, "excl:"+loc)
				return fmt.Sprintf("held open exclusively by pid %d", pid), release
			}},
		},
	})
}

// supportsReflink reports whether dir's filesystem can FICLONE.
func supportsReflink(t *testing.T, dir string) bool {
	a, err := os.CreateTemp(dir, "probe-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(a.Name())
	defer a.Close()
	a.Write(make([]byte, 4096))
	b, err := os.CreateTemp(dir, "probe-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(b.Name())
	defer b.Close()
	err = unix.IoctlFileClone(int(b.Fd()), int(a.Fd()))
	if err != nil {
		t.Logf("no reflink in %s: %v", dir, err)
	}
	return err == nil
}
