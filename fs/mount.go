package fs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options tune a mount.
type Options struct {
	// AllowOther lets users other than the mounting one read the images.
	// Without root it needs user_allow_other in /etc/fuse.conf.
	AllowOther bool
	// Debug logs every FUSE request.
	Debug bool
	// Logger gets read/open errors (which the kernel reduces to EIO) and
	// debug output; nil means log.Default().
	Logger *log.Logger
	// DirectIO opens images with FOPEN_DIRECT_IO, bypassing the page cache
	// for read(2): the kernel neither fills page-cache pages nor copies the
	// reply twice, at the price of a second read not coming from memory and
	// no kernel read-ahead (the image's own read-ahead carries sequential
	// reads). It is only used when the kernel grants
	// FUSE_DIRECT_IO_ALLOW_MMAP (Linux >= 6.6), since without it
	// mmap(MAP_SHARED) of a direct-IO file fails with ENODEV; otherwise
	// images stay page-cached (Server.DirectIO says which).
	DirectIO bool
}

// Server is a live mount.
type Server struct {
	srv        *fuse.Server
	mountpoint string
	directIO   bool
	done       chan struct{} // closed when serving stopped and leftover images are closed
}

const (
	// listingTTL is how long a Source.Backups result is reused; entry and
	// attribute timeouts match, so changes show up within about twice this.
	listingTTL = time.Second
	// maxIO is the FUSE request size; with read_ahead_kb raised to match,
	// sequential reads arrive as 1 MiB requests (see /work/shared/notes/fuse.md).
	maxIO       = 1 << 20
	readAheadKB = 1024
)

// Mount serves src read-only at mountpoint, an existing empty directory,
// and returns once the mount is live.
func Mount(mountpoint string, src Source, opt Options) (*Server, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	if err := checkMountpoint(abs); err != nil {
		return nil, err
	}
	logger := opt.Logger
	if logger == nil {
		logger = log.Default()
	}
	f := &filesystem{
		cat:     &catalog{src: src, ttl: listingTTL},
		src:     src,
		log:     logger,
		uid:     uint32(os.Getuid()),
		gid:     uint32(os.Getgid()),
		mounted: time.Now(),
	}
	timeout := listingTTL
	root := &rootNode{fs: f}
	var extra uint64
	if opt.DirectIO {
		extra = fuse.CAP_DIRECT_IO_ALLOW_MMAP
	}
	srv, err := gofs.Mount(abs, root, &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther: opt.AllowOther,
			// "ro" for fusermount3 and for the kernel (a superblock flag);
			// default_permissions lets the kernel enforce the 0444/0555 modes.
			Options:       []string{"ro", "default_permissions"},
			FsName:        "volback",
			Name:          "volback",
			MaxWrite:      maxIO,
			DisableSplice: true, // splice of 1 MiB needs a larger pipe; it only logs noise
			// As root, mount(2) directly; go-fuse falls back to fusermount3.
			DirectMount: os.Geteuid() == 0,
			// MS_RDONLY as a flag too, so /proc/mounts says ro.
			DirectMountFlags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY,
			Debug:            opt.Debug,
			Logger:           logger,
			// go-fuse masks this with what the kernel offers at INIT.
			ExtraCapabilities: extra,
		},
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		UID:          f.uid,
		GID:          f.gid,
		Logger:       logger,
	})
	if err != nil {
		hint := "check that /dev/fuse exists and, when not root, that fusermount3 (package fuse3) is installed"
		if opt.AllowOther && os.Geteuid() != 0 {
			hint += "; --allow-other as non-root needs user_allow_other in /etc/fuse.conf"
		}
		return nil, fmt.Errorf("mount FUSE on %s: %v (%s)", abs, err, hint)
	}
	raiseReadAhead(abs)
	// go-fuse does not expose the flags it answered INIT with, but it
	// answers with the requested extras the kernel offered, so offered and
	// requested means granted. Opens before this (none, unless someone races
	// the mount) are page-cached, which is always correct.
	direct := opt.DirectIO && srv.KernelSettings().Flags64()&fuse.CAP_DIRECT_IO_ALLOW_MMAP != 0
	f.directIO.Store(direct)
	s := &Server{srv: srv, mountpoint: abs, directIO: direct, done: make(chan struct{})}
	go func() {
		srv.Wait()
		// When the kernel tears the connection down (lazy or forced unmount),
		// RELEASEs still queued are dropped: close what they would have.
		f.closeOpen()
		close(s.done)
	}()
	return s, nil
}

// raiseReadAhead sets the mount's read-ahead to 1 MiB: the kernel offers
// only 128 KiB at INIT, which caps sequential read requests at 128 KiB.
// Best effort: without it reads are just slower.
func raiseReadAhead(mountpoint string) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	_ = os.WriteFile(p, []byte(strconv.Itoa(readAheadKB)), 0)
}

// DirectIO reports whether images are opened with FOPEN_DIRECT_IO: asked
// for in Options and granted by the kernel.
func (s *Server) DirectIO() bool { return s.directIO }

// Mountpoint is the absolute path the server is mounted on.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Wait blocks until the file system is unmounted (by Unmount, `volback
// umount` or `fusermount3 -u`).
func (s *Server) Wait() { <-s.done }

// Unmount unmounts and waits for the server to stop. It fails while files
// or loop devices on the mount are open.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %v; %s", s.mountpoint, strings.TrimSpace(err.Error()), busyAdvice(s.mountpoint))
	}
	<-s.done
	return nil
}

// ErrLazyUnmount is wrapped by Unmount's error when the mount was busy and
// was only detached lazily.
var ErrLazyUnmount = errors.New("detached lazily")

// ErrBusy is wrapped by Unmount's error when the mount is in use.
var ErrBusy = errors.New("target is busy")

// busyAdvice says how to find what keeps a mount busy and what to do.
func busyAdvice(mp string) string {
	return fmt.Sprintf("close the files open on it and detach the loop devices backed by its images (find them with `fuser -vm %s` and `losetup -a`), then retry; or `volback umount --lazy %s` to detach it now and let them finish", mp, mp)
}

// Unmount unmounts the volback mount at mountpoint, also when its server
// died (a stale mount). It refuses anything volback did not mount (by the
// file system type and source in /proc/self/mountinfo), and, as umount(8)
// does, a busy mount. With lazy, a busy mount is detached from the tree
// (MNT_DETACH) and the error wraps ErrLazyUnmount, saying what that means.
func Unmount(mountpoint string, lazy bool) error {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("reading the mount table: %w", err)
	}
	m, found, err := findMount(f, abs)
	f.Close()
	switch {
	case err != nil:
		return err
	case !found:
		return fmt.Errorf("%s is not mounted (nothing to do; see /proc/self/mountinfo)", abs)
	case !m.isVolback():
		return fmt.Errorf("%s is a %s mount of %s, not a volback mount; volback umount only unmounts what volback mounted (use umount(8) for anything else)", abs, m.fstype, m.source)
	}
	err = unmount(abs, false)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrBusy) {
		return fmt.Errorf("unmount %s failed: %v (are you root or the user who mounted it?)", abs, err)
	}
	if !lazy {
		return fmt.Errorf("unmount %s: %w; %s", abs, err, busyAdvice(abs))
	}
	if err := unmount(abs, true); err != nil {
		return fmt.Errorf("lazy unmount %s failed: %v", abs, err)
	}
	return fmt.Errorf("%s was busy and was %w: it is gone from the tree, but processes and loop devices that still have images open keep reading them, and the volback mount process exits once they close (find them with `fuser -vm` or `losetup -a`)",
		abs, ErrLazyUnmount)
}

// unmount unmounts abs: umount2(2) as root, else fusermount3 (which may
// unmount FUSE mounts its caller made). A busy mount's error wraps ErrBusy.
func unmount(abs string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = unix.MNT_DETACH
		}
		err := unix.Unmount(abs, flags)
		if errors.Is(err, unix.EBUSY) {
			return ErrBusy
		}
		return err
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	path, err := exec.LookPath("fusermount3")
	if err != nil {
		return fmt.Errorf("fusermount3 is not installed (package fuse3)")
	}
	out, err := exec.Command(path, append(args, abs)...).CombinedOutput()
	if err == nil {
		return nil
	}
	if strings.Contains(string(out), "busy") {
		return ErrBusy
	}
	return errors.New(firstLine(out, err))
}

func firstLine(out []byte, err error) string {
	s := strings.TrimSpace(string(out))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return err.Error()
	}
	return s
}

// checkMountpoint wants an existing, empty directory that is not already a
// mount point, and says what to do otherwise. The mount table is read first,
// so a mount whose server died or hangs is reported without touching it.
func checkMountpoint(path string) error {
	if mounted, err := isMountpoint(path); err != nil {
		return err
	} else if mounted {
		return fmt.Errorf("mountpoint %s is already a mount point; if it is a volback mount whose server is gone (\"Transport endpoint is not connected\"), or one you no longer need, run `volback umount %s` first", path, path)
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("mountpoint %s is a stale FUSE mount (its server is gone); run `volback umount %s` first", path, path)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist; create it with `mkdir -p %s`", path, path)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", path, err)
	case !st.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory; mount on an empty directory", path)
	}
	d, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", path, err)
	}
	defer d.Close()
	if names, _ := d.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty (it holds %q); mount on an empty directory", path, names[0])
	}
	return nil
}

// isMountpoint reports whether path (absolute, clean) is a mount point in
// this mount namespace. It reads mountinfo rather than stat-ing path, which
// would hang or fail on a dead FUSE server.
func isMountpoint(path string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("reading the mount table: %w", err)
	}
	defer f.Close()
	return mountinfoHas(f, path)
}

func mountinfoHas(r io.Reader, path string) (bool, error) {
	_, found, err := findMount(r, path)
	return found, err
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct{ fstype, source string }

// isVolback tells volback's own FUSE mounts (fs.Mount names them
// "volback") from every other mount.
func (m mountEntry) isVolback() bool {
	return (m.fstype == "fuse.volback" || m.fstype == "fuse") && m.source == "volback"
}

// findMount returns the topmost mount on path (absolute, clean).
func findMount(r io.Reader, path string) (m mountEntry, found bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw":
		// field 5 is the mount point; after "-" come the type and source.
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != path {
			continue
		}
		found, m = true, mountEntry{}
		for i := 5; i+2 < len(fields); i++ {
			if fields[i] == "-" {
				m = mountEntry{fstype: fields[i+1], source: unescapeMountinfo(fields[i+2])}
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return mountEntry{}, false, fmt.Errorf("reading the mount table: %w", err)
	}
	return m, found, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for space, ...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
