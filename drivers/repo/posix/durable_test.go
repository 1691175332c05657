package posix

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/repo/repotest"
	"golang.org/x/sys/unix"
)

// From linux/ext4.h: _IOR('X', 125, __u32), and the flag that drops the
// journal instead of flushing it.
const (
	ext4IocShutdown          = 0x8004587d
	ext4GoingFlagsNoLogFlush = 2
)

// ext4Crasher is a repository on a loop-mounted ext4 image whose power is
// cut with EXT4_IOC_SHUTDOWN (NOLOGFLUSH): the journal is not written, so
// every metadata change not forced by an fsync is lost, as in a power cut.
type ext4Crasher struct {
	img, mnt string
}

func newExt4Crasher(t *testing.T) repotest.Crasher {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts an ext4 image")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices")
	}
	dir := t.TempDir()
	c := &ext4Crasher{img: filepath.Join(dir, "fs.img"), mnt: filepath.Join(dir, "mnt")}
	if err := os.WriteFile(c.img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(c.img, 32<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-F", c.img)
	if err := os.Mkdir(c.mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-o", "loop", c.img, c.mnt)
	t.Cleanup(func() { exec.Command("umount", c.mnt).Run() })
	return c
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func (c *ext4Crasher) Open(t *testing.T) repo.Backend {
	b, err := Open(filepath.Join(c.mnt, "repo"), true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c *ext4Crasher) Crash(t *testing.T) {
	f, err := os.Open(c.mnt)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.IoctlSetPointerInt(int(f.Fd()), ext4IocShutdown, ext4GoingFlagsNoLogFlush)
	f.Close()
	if err != nil {
		t.Skipf("EXT4_IOC_SHUTDOWN: %v (the kernel cannot simulate a power cut)", err)
	}
	run(t, "umount", c.mnt)
	run(t, "mount", "-o", "loop", c.img, c.mnt)
}

func TestDurable(t *testing.T) { repotest.RunDurable(t, newExt4Crasher) }
