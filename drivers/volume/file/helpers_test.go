package file

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const MiB = 1 << 20

// TestMain doubles as the holder process: with VOLBACK_TEST_HOLD set, the
// test binary takes the hold it names, says "held", and keeps it until
// its stdin closes. A separate process gives the holder its own pid, as a
// QEMU or a mount helper would have.
func TestMain(m *testing.M) {
	if spec := os.Getenv("VOLBACK_TEST_HOLD"); spec != "" {
		os.Exit(holdMain(spec))
	}
	os.Exit(m.Run())
}

// holdMain takes one of: ofd-write:PATH (an OFD write lock over the whole
// file), qemu:PATH (the OFD read locks QEMU takes on bytes 100-101 and 203
// while it has an image open for writing), posix-read:PATH (a classic
// fcntl read lock), excl:DEVICE (an O_EXCL open of a block device).
func holdMain(spec string) int {
	kind, path, _ := strings.Cut(spec, ":")
	flag := os.O_RDWR
	if kind == "excl" || kind == "posix-read" {
		flag = os.O_RDONLY
	}
	if kind == "excl" {
		flag |= syscall.O_EXCL
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		return 1
	}
	lock := func(cmd int, typ int16, start, length int64) {
		lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: length}
		if err == nil {
			err = unix.FcntlFlock(f.Fd(), cmd, &lk)
		}
	}
	switch kind {
	case "ofd-write":
		lock(unix.F_OFD_SETLK, unix.F_WRLCK, 0, 0)
	case "qemu":
		lock(unix.F_OFD_SETLK, unix.F_RDLCK, 100, 2)
		lock(unix.F_OFD_SETLK, unix.F_RDLCK, 203, 1)
	case "posix-read":
		lock(unix.F_SETLK, unix.F_RDLCK, 0, 0)
	case "excl":
	default:
		err = fmt.Errorf("unknown hold %q", kind)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "holder:", err)
		return 1
	}
	fmt.Println("held")
	io.Copy(io.Discard, os.Stdin)
	f.Close()
	return 0
}

// holdIn starts a holder process (see holdMain) and returns its pid and a
// release function (also run at the end of the test).
func holdIn(t *testing.T, spec string) (pid int, release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "VOLBACK_TEST_HOLD="+spec)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	release = sync.OnceFunc(func() {
		stdin.Close()
		cmd.Wait()
	})
	t.Cleanup(release)
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "held" {
		release()
		t.Fatalf("holder %s did not take its hold (said %q)", spec, line)
	}
	return cmd.Process.Pid, release
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mounts)")
	}
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("needs %s on PATH (scripts/deps.sh installs it)", name)
	}
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// losetup attaches file to a free loop device, detached when the test ends
// or release is called.
func losetup(t *testing.T, file string) (dev string, release func()) {
	t.Helper()
	requireRoot(t)
	requireTool(t, "losetup")
	dev = sh(t, "losetup", "-f", "--show", file)
	release = sync.OnceFunc(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	t.Cleanup(release)
	return dev, release
}

// mountAt mounts source (-o opts) on a new directory, unmounted when the
// test ends or release is called.
func mountAt(t *testing.T, source, opts string) (dir string, release func()) {
	t.Helper()
	requireRoot(t)
	dir, err := os.MkdirTemp("", "vbvol-mnt-")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{source, dir}
	if opts != "" {
		args = append([]string{"-o", opts}, args...)
	}
	sh(t, "mount", args...)
	release = sync.OnceFunc(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
		os.Remove(dir)
	})
	t.Cleanup(release)
	return dir, release
}

// sparseFile creates a sparse file of size bytes.
func sparseFile(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// xfsDir mounts a new XFS filesystem (reflink is on by default since
// xfsprogs 5.1) from a sparse image and returns its root.
func xfsDir(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	requireTool(t, "mkfs.xfs")
	img := filepath.Join(t.TempDir(), "xfs.img")
	sparseFile(t, img, 512*MiB)
	sh(t, "mkfs.xfs", "-q", "-m", "reflink=1", img)
	dir, _ := mountAt(t, img, "loop")
	return dir
}
