package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The owner of a home's catalog answers on <home>/run/volback.sock. The
// directory is private (ours or root's, mode 0700) so no other user can
// put a socket where volback looks for its owner, and every connection's
// peer is checked with SO_PEERCRED on both ends: a process of another user
// neither answers our calls nor gets answers.
const (
	socketDirName = "run"
	socketName    = "volback.sock"
	// maxSocketAddr is the longest path a sockaddr_un holds (108 with its NUL).
	maxSocketAddr = 107
)

// SocketPath is where the owner of the catalog in home answers the API.
func SocketPath(home string) string { return filepath.Join(home, socketDirName, socketName) }

// errNoOwner means nobody answers on the socket: become the owner.
var errNoOwner = errors.New("no volback process answers on the socket")

// socketDir is the opened and checked directory of the socket. It stays
// open for the life of a Session: a home too long for a socket address is
// reached as /proc/self/fd/<fd>/volback.sock, and checks use the directory
// that was opened, not whatever the path names later.
type socketDir struct {
	path string
	fd   int
	// shared: other local users call this home's owner (volback.toml has
	// a [users] table), so the directory may be 0755 and the socket 0666;
	// the owner checks every caller against [users]. Nobody else may ever
	// write the directory.
	shared bool
}

// openSocketDir opens home's socket directory, creating it (0700, never
// wider: mkdir applies the mode at creation) when create is set. It
// returns an error wrapping fs.ErrNotExist when the directory is absent
// and create is not set.
func openSocketDir(home string, create, shared bool) (*socketDir, error) {
	path := filepath.Join(home, socketDirName)
	if create {
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating the socket directory %s: %w", path, err)
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("socket directory %s: %w", path, fs.ErrNotExist)
	case errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR):
		return nil, fmt.Errorf("socket directory %s is not a directory (a symlink or a file): remove it; volback creates it again", path)
	case errors.Is(err, unix.EACCES):
		return nil, fmt.Errorf("socket directory %s: permission denied: the volback home %s belongs to another user; run volback as that user, or use a home of your own (--home), or have its admin add you to [users] in its volback.toml and run 'volback serve' there", path, home)
	case err != nil:
		return nil, fmt.Errorf("socket directory %s: %w", path, err)
	}
	d := &socketDir{path: path, fd: fd, shared: shared}
	if err := d.check(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// trustedUID: our own user, or root (who can do anything anyway).
func trustedUID(uid uint32) bool { return uid == uint32(os.Geteuid()) || uid == 0 }

// trustedUsers names them for messages.
func trustedUsers() string {
	if os.Geteuid() == 0 {
		return "root (this user)"
	}
	return fmt.Sprintf("uid %d (this user) or root", os.Geteuid())
}

// check refuses a directory that another user owns or can enter.
func (d *socketDir) check() error {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return fmt.Errorf("socket directory %s: %w", d.path, err)
	}
	if !trustedUID(st.Uid) {
		return fmt.Errorf("socket directory %s belongs to uid %d, not to %s: another user could answer volback's calls there; remove it (volback creates it again) and check who can write to %s",
			d.path, st.Uid, trustedUsers(), filepath.Dir(d.path))
	}
	if st.Mode&0o022 != 0 || (!d.shared && st.Mode&0o077 != 0) {
		return fmt.Errorf("socket directory %s has mode %#o: other users can reach the catalog's socket; run chmod 700 %s (or 755 where volback.toml's [users] lets other users call it)",
			d.path, st.Mode&0o777, d.path)
	}
	return nil
}

// share opens the way to the socket for the users of [users]: the home
// and the directory become enterable by others (never writable), and
// the socket connectable; the owner checks each caller's uid.
func (d *socketDir) share(home string) error {
	if !d.shared {
		return nil
	}
	st, err := os.Stat(home)
	if err != nil {
		return err
	}
	if err := os.Chmod(home, st.Mode().Perm()|0o011); err != nil {
		return fmt.Errorf("letting the users of [users] reach %s: %w", home, err)
	}
	if err := unix.Fchmod(d.fd, 0o755); err != nil {
		return fmt.Errorf("letting the users of [users] reach %s: %w", d.path, err)
	}
	return nil
}

// socketMode is the socket's mode: 0600, or 0666 in a shared home.
func (d *socketDir) socketMode() uint32 {
	if d.shared {
		return 0o666
	}
	return 0o600
}

// Close closes the directory.
func (d *socketDir) Close() error { return unix.Close(d.fd) }

// sockPath is the socket's path for messages.
func (d *socketDir) sockPath() string { return filepath.Join(d.path, socketName) }

// addr is the socket's address: its path when that fits a sockaddr_un,
// else the same file reached through the open directory.
func (d *socketDir) addr() string {
	if p := d.sockPath(); len(p) <= maxSocketAddr {
		return p
	}
	return "/proc/self/fd/" + strconv.Itoa(d.fd) + "/" + socketName
}

// checkSocket reports whether the socket file exists and refuses one that
// another user made or that is not a socket.
func (d *socketDir) checkSocket() (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, socketName, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("socket %s: %w", d.sockPath(), err)
	}
	if !trustedUID(st.Uid) {
		return false, fmt.Errorf("socket %s belongs to uid %d, not to %s: another user may be waiting there to answer volback's calls; stop that user's process, remove %s and check who can write to %s",
			d.sockPath(), st.Uid, trustedUsers(), d.sockPath(), d.path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return false, fmt.Errorf("%s is not a socket: remove it; the catalog's owner creates it", d.sockPath())
	}
	return true, nil
}

// listen replaces a stale socket (the caller holds the catalog lock, so no
// live owner uses it) with a new one, mode 0600 from its creation: the
// mode is set on the socket before bind, which creates the file with it,
// so there is no moment when it is wider.
func (d *socketDir) listen() (net.Listener, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	exists, err := d.checkSocket()
	if err != nil {
		return nil, err
	}
	if exists {
		if err := unix.Unlinkat(d.fd, socketName, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("removing the stale socket %s: %w", d.sockPath(), err)
		}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket for %s: %w", d.sockPath(), err)
	}
	f := os.NewFile(uintptr(fd), d.sockPath())
	defer f.Close() // FileListener keeps its own copy
	if err := unix.Fchmod(fd, d.socketMode()); err != nil {
		return nil, fmt.Errorf("socket for %s: %w", d.sockPath(), err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: d.addr()}); err != nil {
		return nil, fmt.Errorf("serving the API on %s: %w", d.sockPath(), err)
	}
	// The umask may have removed bits from the mode; put back only those.
	if err := unix.Fchmodat(d.fd, socketName, d.socketMode(), 0); err != nil {
		d.removeSocket()
		return nil, fmt.Errorf("socket %s: %w", d.sockPath(), err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		d.removeSocket()
		return nil, fmt.Errorf("serving the API on %s: %w", d.sockPath(), err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		d.removeSocket()
		return nil, fmt.Errorf("serving the API on %s: %w", d.sockPath(), err)
	}
	return ln, nil
}

// removeSocket removes the socket file (an owner leaving, still holding the
// catalog lock).
func (d *socketDir) removeSocket() { unix.Unlinkat(d.fd, socketName, 0) }

// dial connects to the owner and checks that it runs as our user or root.
// It returns errNoOwner (wrapped) when no process listens.
func (d *socketDir) dial(ctx context.Context) (net.Conn, *unix.Ucred, error) {
	exists, err := d.checkSocket()
	if err != nil {
		return nil, nil, err
	}
	if !exists {
		return nil, nil, fmt.Errorf("%w: %s is absent", errNoOwner, d.sockPath())
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", d.addr())
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, nil, fmt.Errorf("%w: %s: %v", errNoOwner, d.sockPath(), err)
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("connecting to the catalog's owner on %s: %w", d.sockPath(), err)
	}
	cred, err := peerCred(c)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("connecting to the catalog's owner on %s: %w", d.sockPath(), err)
	}
	if !trustedUID(cred.Uid) {
		c.Close()
		return nil, nil, fmt.Errorf("the process answering on %s (pid %d) runs as uid %d, not as %s: refusing to trust its answers; stop that process and remove %s",
			d.sockPath(), cred.Pid, cred.Uid, trustedUsers(), d.sockPath())
	}
	return c, cred, nil
}

// peerCred is the connected process's credentials (SO_PEERCRED): for a
// client, the owner that called listen; for the owner, the client that
// called connect.
func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred, nil
}
