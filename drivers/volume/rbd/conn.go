//go:build ceph

package rbd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"

	"github.com/volback/volback/drivers/volume"
)

// cluster is one connection to a Ceph cluster, shared by every image this
// process opens there: connecting costs a round of monitor handshakes, and
// one connection means one client id, which is how InUse tells this
// process's own watches from other clients'.
type cluster struct {
	conn *rados.Conn
	id   int64 // the client's global id: client.<id> in watcher lists
}

var clusters = struct {
	sync.Mutex
	m map[string]*cluster
}{m: map[string]*cluster{}}

// connect returns the shared connection for l's conf, user and timeout,
// connecting on first use. Connections live as long as the process.
func connect(l Locator) (*cluster, error) {
	conf, user := l.ConfPath(), l.UserID()
	key := conf + "\x00" + user + "\x00" + l.Timeout.String()
	clusters.Lock()
	defer clusters.Unlock()
	if c, ok := clusters.m[key]; ok {
		return c, nil
	}
	if _, err := os.Stat(conf); err != nil {
		return nil, fmt.Errorf("volume %s: Ceph configuration %s: %v (name the cluster's ceph.conf with ?conf=PATH or CEPH_CONF)", l, conf, err)
	}
	conn, err := rados.NewConnWithUser(user)
	if err != nil {
		return nil, fmt.Errorf("volume %s: create a Ceph client: %v", l, err)
	}
	if err := conn.ReadConfigFile(conf); err != nil {
		conn.Shutdown()
		return nil, fmt.Errorf("volume %s: read Ceph configuration %s: %v (is it a ceph.conf?)", l, conf, err)
	}
	secs := strconv.Itoa(int((l.Timeout + time.Second - 1) / time.Second))
	for k, v := range map[string]string{
		"rados_osd_op_timeout": secs,
		"rados_mon_op_timeout": secs,
		"client_mount_timeout": secs,
		// Discard must zero exactly what it is given: with partial
		// discards skipped, the unaligned edges of a range keep their
		// old bytes and a restore would leave stale data there.
		"rbd_skip_partial_discard": "false",
		// librados and librbd report through return codes; their own
		// log lines would land in the middle of volback's output.
		"log_to_stderr": "false",
		"err_to_stderr": "false",
	} {
		if err := conn.SetConfigOption(k, v); err != nil {
			conn.Shutdown()
			return nil, fmt.Errorf("volume %s: set Ceph option %s: %v", l, k, err)
		}
	}
	if err := conn.Connect(); err != nil {
		conn.Shutdown()
		hint := "check that the monitors named in " + conf + " are up and reachable"
		if c := errno(err); c == -13 || c == -1 || c == -95 {
			hint = "check that the keyring named in " + conf + " holds the key of client." + user + " (or choose the user with ?user=)"
		}
		return nil, fmt.Errorf("volume %s: connect to the Ceph cluster as client.%s (timeout %v): %v; %s", l, user, l.Timeout, err, hint)
	}
	c := &cluster{conn: conn, id: int64(conn.GetInstanceID())}
	clusters.m[key] = c
	return c, nil
}

// ioctx opens l's pool and namespace.
func ioctx(l Locator) (*cluster, *rados.IOContext, error) {
	c, err := connect(l)
	if err != nil {
		return nil, nil, err
	}
	io, err := c.conn.OpenIOContext(l.Pool)
	if errors.Is(err, rados.ErrNotFound) {
		return nil, nil, volume.Errorf(volume.ErrNotFound, "volume %s does not exist: the Ceph cluster of %s has no pool %s (create it with `ceph osd pool create %s` and `rbd pool init %s`, or fix the locator)",
			l, l.ConfPath(), l.Pool, l.Pool, l.Pool)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("volume %s: open pool %s: %w", l, l.Pool, err)
	}
	io.SetNamespace(l.Namespace)
	return c, io, nil
}

// errno is the negative errno inside a go-ceph error, or 0.
func errno(err error) int {
	var ce interface{ ErrorCode() int }
	if errors.As(err, &ce) {
		return ce.ErrorCode()
	}
	return 0
}

// opErr describes a failed operation on the image at l, with what to do
// for the errors an operator can act on.
func opErr(l Locator, op string, err error) error {
	switch errno(err) {
	case -2: // ENOENT
		return volume.Errorf(volume.ErrNotFound, "volume %s does not exist: no image %s in pool %s%s (`rbd ls %s` lists them)", l, l.Image, l.Pool, nsText(l), l.Pool)
	case -110: // ETIMEDOUT
		return fmt.Errorf("%s volume %s: %w: the Ceph cluster did not answer within %v; check that its OSDs are up (`ceph -s`, `ceph osd tree`)", op, l, err, l.Timeout)
	case -28: // ENOSPC
		return fmt.Errorf("%s volume %s: %w: the Ceph cluster is full; free space or add OSDs", op, l, err)
	case -122: // EDQUOT
		return fmt.Errorf("%s volume %s: %w: pool %s is over its quota; raise it (`ceph osd pool set-quota`) or free space", op, l, err, l.Pool)
	case -1, -13: // EPERM, EACCES
		return fmt.Errorf("%s volume %s: %w: client.%s may not do this; grant it `osd 'profile rbd pool=%s'` and `mon 'profile rbd'`", op, l, err, l.UserID(), l.Pool)
	case -30: // EROFS
		return fmt.Errorf("%s volume %s: %w: the image is read-only here (a snapshot, or another client holds its exclusive lock in exclusive mode)", op, l, err)
	}
	return fmt.Errorf("%s volume %s: %w", op, l, err)
}

func nsText(l Locator) string {
	if l.Namespace == "" {
		return ""
	}
	return " namespace " + l.Namespace
}

// image is an open image with the pool context it was opened through.
type image struct {
	*rbd.Image
	loc Locator
	c   *cluster
	io  *rados.IOContext

	closeOnce sync.Once
	closeErr  error
}

// openImage opens l's image (at l.Snapshot, read-only, when set; else for
// writing when write is set).
func openImage(l Locator, write bool) (*image, error) {
	c, io, err := ioctx(l)
	if err != nil {
		return nil, err
	}
	snap := rbd.NoSnapshot
	if l.Snapshot != "" {
		snap = l.Snapshot
	}
	var img *rbd.Image
	if write && l.Snapshot == "" {
		img, err = rbd.OpenImage(io, l.Image, snap)
	} else {
		img, err = rbd.OpenImageReadOnly(io, l.Image, snap)
	}
	if err != nil {
		io.Destroy()
		if errno(err) == -2 && l.Snapshot != "" {
			return nil, snapshotMissing(l)
		}
		return nil, opErr(l, "open", err)
	}
	return &image{Image: img, loc: l, c: c, io: io}, nil
}

// snapshotMissing is the error for a snapshot (or its image) that is gone.
func snapshotMissing(l Locator) error {
	base := l.At("")
	if _, err := statImage(base); errors.Is(err, volume.ErrNotFound) {
		return err
	}
	return volume.Errorf(volume.ErrNotFound, "snapshot %q of volume %s does not exist (`rbd snap ls %s` lists them)", l.Snapshot, base, base.Spec())
}

// close closes the image and its pool context once: callers may close a
// source twice, and destroying a context twice corrupts librados' heap.
func (im *image) close() error {
	im.closeOnce.Do(func() {
		im.closeErr = im.Image.Close()
		im.io.Destroy()
	})
	return im.closeErr
}

// size is the image's size, checked to be whole sectors.
func (im *image) size() (int64, error) {
	n, err := im.GetSize()
	if err != nil {
		return 0, opErr(im.loc, "size of", err)
	}
	size := int64(n)
	if err := volume.CheckSize(im.loc.String(), size, fmt.Sprintf("resize it to whole sectors (rbd resize --size %dB %s)", volume.RoundUp(size), im.loc.Spec())); err != nil {
		return 0, err
	}
	return size, nil
}

// statImage opens l read-only to learn its size.
func statImage(l Locator) (int64, error) {
	im, err := openImage(l, false)
	if err != nil {
		return 0, err
	}
	defer im.close()
	return im.size()
}
