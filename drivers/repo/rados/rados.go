//go:build ceph

package rados

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/volback/volback/drivers/repo"
)

const (
	// metaKey is the omap key of an object's metadata record.
	metaKey = "volback.meta"
	// reserved starts every internal object name (index, parts, locks).
	reserved = "volback."
	// maxPartSize is the part size of large objects: 1 MiB parts written
	// concurrently measured about twice as fast as one write_full of an
	// 8 MiB pack (see docs/BENCHMARKS.md).
	maxPartSize = 1 << 20
	// partWriters bounds the parts of one object in flight at once.
	partWriters = 8
	// firstRead is how much of an object Get reads with its metadata.
	firstRead      = 64 << 10
	defaultTimeout = 30 * time.Second
)

func init() {
	repo.Register("rados", func(ctx context.Context, u *url.URL, create bool) (repo.Backend, error) {
		return OpenURL(ctx, u, create)
	})
}

// Backend is one connection to a pool (and namespace).
type Backend struct {
	conn     *rados.Conn
	io       *rados.IOContext
	location string
	pool     string
	client   string // "client.<global id>", as cls lock names holders
	partSize int64
	timeout  time.Duration

	dirsMu sync.Mutex
	dirs   map[string]bool // top-level directories known to be in the root index

	layouts layoutCache
}

// layoutCache remembers the metadata of large (split) objects, so a
// ReadAt of a pack costs one round trip (the part) instead of two. Parts
// are never rewritten, only deleted: a reader whose part is gone drops the
// entry and starts from the head again. This client's own Put and Delete
// drop entries at once; after another client's replace or delete, a
// reader here sees the old object only while its parts still exist.
type layoutCache struct {
	mu sync.Mutex
	m  map[string]meta
}

const maxLayouts = 4096

func (c *layoutCache) get(name string) (meta, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.m[name]
	return m, ok
}

func (c *layoutCache) put(name string, m meta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxLayouts {
		c.m = map[string]meta{} // crude, but bounded and rare
	}
	c.m[name] = m
}

func (c *layoutCache) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, name)
}

// OpenURL connects to the cluster and opens the pool a rados:// URL names.
func OpenURL(ctx context.Context, u *url.URL, create bool) (*Backend, error) {
	loc := u.String()
	pool := u.Host
	if pool == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("repository URL %q: use rados://POOL[?conf=…&user=…&namespace=…] (the pool name is the host part)", loc)
	}
	conf := os.Getenv("CEPH_CONF")
	if conf == "" {
		conf = "/etc/ceph/ceph.conf"
	}
	user, ns, timeout := "admin", "", defaultTimeout
	for k, v := range u.Query() {
		switch val := v[len(v)-1]; k {
		case "conf":
			conf = val
		case "user":
			user = strings.TrimPrefix(val, "client.")
		case "namespace":
			ns = val
		case "timeout":
			d, err := time.ParseDuration(val)
			if err != nil || d < time.Second {
				return nil, fmt.Errorf("repository URL %q: timeout=%q is not a duration of at least 1s (e.g. timeout=30s)", loc, val)
			}
			timeout = d
		default:
			return nil, fmt.Errorf("repository URL %q: unknown parameter %q (rados:// knows conf, user, namespace, timeout)", loc, k)
		}
	}
	if _, err := os.Stat(conf); err != nil {
		return nil, fmt.Errorf("repository %s: Ceph configuration %s: %v (name the cluster's ceph.conf with ?conf=PATH or CEPH_CONF)", loc, conf, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	conn, err := rados.NewConnWithUser(user)
	if err != nil {
		return nil, fmt.Errorf("repository %s: create a Ceph client: %v", loc, err)
	}
	ok := false
	defer func() {
		if !ok {
			conn.Shutdown()
		}
	}()
	if err := conn.ReadConfigFile(conf); err != nil {
		return nil, fmt.Errorf("repository %s: read Ceph configuration %s: %v (is it a ceph.conf?)", loc, conf, err)
	}
	secs := strconv.Itoa(int((timeout + time.Second - 1) / time.Second))
	for k, v := range map[string]string{
		"rados_osd_op_timeout": secs,
		"rados_mon_op_timeout": secs,
		"client_mount_timeout": secs,
		// librados reports through return codes; its own log lines
		// would land in the middle of volback's output.
		"log_to_stderr": "false",
		"err_to_stderr": "false",
	} {
		if err := conn.SetConfigOption(k, v); err != nil {
			return nil, fmt.Errorf("repository %s: set Ceph option %s: %v", loc, k, err)
		}
	}
	if err := conn.Connect(); err != nil {
		hint := "check that the monitors named in " + conf + " are up and reachable"
		if c := errno(err); c == -13 || c == -1 || c == -95 {
			hint = "check that the keyring named in " + conf + " holds the key of client." + user + " (or choose the user with ?user=)"
		}
		return nil, fmt.Errorf("repository %s: connect to the Ceph cluster as client.%s (timeout %v): %v; %s", loc, user, timeout, err, hint)
	}

	b := &Backend{conn: conn, location: loc, pool: pool, timeout: timeout, dirs: map[string]bool{}}
	b.client = fmt.Sprintf("client.%d", conn.GetInstanceID())
	b.partSize = min(int64(maxPartSize), b.maxObjectSize())

	b.io, err = conn.OpenIOContext(pool)
	if errors.Is(err, rados.ErrNotFound) && create {
		if err = conn.MakePool(pool); err != nil && !errors.Is(err, rados.ErrObjectExists) {
			return nil, fmt.Errorf("repository %s: create pool %s: %v (client.%s needs mon 'allow *' or 'profile osd'-like caps to create pools; or create it with `ceph osd pool create %s`)", loc, pool, err, user, pool)
		}
		// Tag the pool, as Ceph warns about pools without an application.
		cmd, _ := json.Marshal(map[string]string{"prefix": "osd pool application enable", "pool": pool, "app": "volback"})
		conn.MonCommand(cmd) //nolint:errcheck // only silences a health warning
		b.io, err = conn.OpenIOContext(pool)
	}
	if errors.Is(err, rados.ErrNotFound) {
		return nil, fmt.Errorf("repository %s: pool %s does not exist in the Ceph cluster of %s: create it (`ceph osd pool create %s`), initialise the repository (which creates it), or fix the URL", loc, pool, conf, pool)
	}
	if err != nil {
		return nil, fmt.Errorf("repository %s: open pool %s: %v", loc, pool, err)
	}
	b.io.SetNamespace(ns)
	// One read now, so an OSD that does not answer or missing caps show
	// up at open rather than in the middle of a backup.
	if _, err := b.readIndexPage(rootIndex, "", "", 1); err != nil {
		b.io.Destroy()
		return nil, b.opErr("read the index of", rootIndex, err)
	}
	ok = true
	return b, nil
}

// maxObjectSize is the cluster's osd_max_object_size: the smaller of what
// the client's configuration says (its conf file and the mon's central
// config for clients) and what the mon's config says for OSDs.
func (b *Backend) maxObjectSize() int64 {
	size := int64(128 << 20) // Ceph's default
	if v, err := b.conn.GetConfigOption("osd_max_object_size"); err == nil {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			size = min(size, n)
		}
	}
	cmd, _ := json.Marshal(map[string]string{"prefix": "config get", "who": "osd", "key": "osd_max_object_size", "format": "json"})
	if out, _, err := b.conn.MonCommand(cmd); err == nil {
		var n int64
		if json.Unmarshal(out, &n) == nil && n > 0 {
			size = min(size, n)
		}
	}
	return size
}

// Name implements repo.Backend.
func (b *Backend) Name() string { return DriverName }

// Location implements repo.Backend.
func (b *Backend) Location() string { return b.location }

// Properties: objects of any size (large ones are split into parts below
// osd_max_object_size), listed through the index.
func (b *Backend) Properties() repo.Properties { return repo.Properties{IndexedList: true} }

// PartSize is the size above which objects are split into parts.
func (b *Backend) PartSize() int64 { return b.partSize }

// Close disconnects from the cluster.
func (b *Backend) Close() error {
	b.io.Destroy()
	b.conn.Shutdown()
	return nil
}

func (b *Backend) check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := repo.CheckName(name); err != nil {
		return err
	}
	if strings.HasPrefix(name, reserved) {
		return fmt.Errorf("invalid object name %q: names starting with %q are reserved for the rados driver's own objects", name, reserved)
	}
	return nil
}

func partOID(nonce uint64, i int64) string {
	return fmt.Sprintf("%spart.%016x.%d", reserved, nonce, i)
}

func newNonce() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if n := binary.LittleEndian.Uint64(b[:]); n != 0 {
			return n
		}
	}
}

// Put writes the index entry (pending), the parts of a large object
// concurrently, the head object with its metadata in one atomic op (the
// commit point), removes the parts of the object it replaced, and commits
// the index entry.
func (b *Backend) Put(ctx context.Context, name string, data []byte) error {
	if err := b.check(ctx, name); err != nil {
		return err
	}
	b.layouts.drop(name)
	old, hadOld, err := b.readMeta(name)
	if err != nil {
		return b.opErr("store", name, err)
	}
	m := meta{size: int64(len(data)), modTime: time.Now(), nonce: newNonce()}
	if m.size > b.partSize {
		m.parts = uint32(partsFor(m.size, b.partSize))
		m.partSize = uint32(b.partSize)
	}
	pending := entry{pending: true, size: m.size, modTime: m.modTime, nonce: m.nonce, parts: m.parts, oldNonce: old.nonce, oldParts: old.parts}
	if err := b.setEntry(name, pending); err != nil {
		return b.opErr("store", name, err)
	}
	undo := func(err error) error {
		// The new parts are garbage; the index must describe the
		// object that is there (the old one, or none).
		b.deleteParts(m)
		if hadOld {
			b.setEntry(name, entry{size: old.size, modTime: old.modTime})
		} else {
			b.rmEntry(name)
		}
		return b.opErr("store", name, err)
	}
	if err := b.writeParts(ctx, m, data); err != nil {
		return undo(err)
	}
	if err := ctx.Err(); err != nil {
		return undo(err)
	}
	op := rados.CreateWriteOp()
	defer op.Release()
	if m.parts == 0 && len(data) > 0 {
		op.WriteFull(data)
	} else {
		// go-ceph cannot write_full zero bytes. The metadata's size is
		// the truth for readers, so an old inline object's bytes left
		// in the head are never read (they are at most one part).
		op.Create(rados.CreateIdempotent)
	}
	op.SetOmap(map[string][]byte{metaKey: m.encode()})
	if err := op.Operate(b.io, name, rados.OperationNoFlag); err != nil {
		// A timeout does not say whether the OSD applied the op: look
		// before undoing, or the parts of a written head could go.
		now, ok, rerr := b.readMeta(name)
		switch {
		case rerr == nil && ok && now.nonce == m.nonce:
			// It was written after all.
		case rerr == nil:
			return undo(err)
		default:
			// Unknown: the pending entry names these parts, and
			// CleanUp settles it by what the head says.
			return b.opErr("store", name, err)
		}
	}
	if hadOld && old.nonce != m.nonce {
		b.deleteParts(old) // a failure only leaves garbage, listed in no index
	}
	// A failed commit leaves the entry pending, which List checks
	// against the object: the listing stays right.
	b.setEntry(name, entry{size: m.size, modTime: m.modTime}) //nolint:errcheck
	return nil
}

// writeParts writes the parts of a large object, partWriters at a time.
func (b *Backend) writeParts(ctx context.Context, m meta, data []byte) error {
	if m.parts == 0 {
		return nil
	}
	sem := make(chan struct{}, partWriters)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := int64(0); i < int64(m.parts); i++ {
		sem <- struct{}{}
		mu.Lock()
		stop := first != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			<-sem
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			lo := i * int64(m.partSize)
			hi := min(lo+int64(m.partSize), m.size)
			if err := b.io.WriteFull(partOID(m.nonce, i), data[lo:hi]); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("part %d: %w", i, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// deleteParts removes an object's parts; missing parts are fine.
func (b *Backend) deleteParts(m meta) {
	if m.parts == 0 {
		return
	}
	sem := make(chan struct{}, partWriters)
	var wg sync.WaitGroup
	for i := int64(0); i < int64(m.parts); i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			b.io.Delete(partOID(m.nonce, i)) //nolint:errcheck // leftovers are garbage only
		})
	}
	wg.Wait()
}

// readMeta reads the head's metadata; ok is false when there is no object.
func (b *Backend) readMeta(name string) (m meta, ok bool, err error) {
	m, _, ok, err = b.readHead(name, 0, nil)
	return m, ok, err
}

// readHead reads the head's metadata and, in the same op (so both come
// from one version of the object), up to len(p) bytes of its inline data
// at off.
func (b *Backend) readHead(name string, off int64, p []byte) (m meta, n int, ok bool, err error) {
	op := rados.CreateReadOp()
	defer op.Release()
	ms := op.GetOmapValuesByKeys([]string{metaKey})
	var rs *rados.ReadOpReadStep
	if len(p) > 0 {
		rs = op.Read(uint64(off), p)
	}
	if err := op.Operate(b.io, name, rados.OperationNoFlag); err != nil {
		if errno(err) == -2 {
			return meta{}, 0, false, nil
		}
		return meta{}, 0, false, err
	}
	kv, err := ms.Next()
	if err != nil {
		return meta{}, 0, false, err
	}
	if kv == nil {
		return meta{}, 0, false, fmt.Errorf("object %s has no %s record: it was not written by volback's rados driver", name, metaKey)
	}
	if m, err = decodeMeta(kv.Value); err != nil {
		return meta{}, 0, false, fmt.Errorf("object %s: %w", name, err)
	}
	if rs != nil {
		n = int(rs.BytesRead)
	}
	return m, n, true, nil
}

// errPartGone: a part vanished under a reader, because the object was
// replaced or deleted meanwhile. The reader starts again from the head.
var errPartGone = errors.New("part replaced or deleted during the read")

// readRange reads p at off from the parts of a large object.
func (b *Backend) readRange(m meta, p []byte, off int64) error {
	ps := int64(m.partSize)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, partWriters)
	for done := int64(0); done < int64(len(p)); {
		i := (off + done) / ps
		in := (off + done) % ps
		n := min(ps-in, int64(len(p))-done)
		buf := p[done : done+n]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			got, err := b.io.Read(partOID(m.nonce, i), buf, uint64(in))
			switch {
			case errno(err) == -2:
				err = errPartGone
			case err == nil && int64(got) != n:
				err = fmt.Errorf("part %d holds %d bytes at offset %d, want %d: the object is damaged", i, got, in, n)
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
		done += n
	}
	wg.Wait()
	return first
}

// notFound is the error for a missing object.
func (b *Backend) notFound(name string) error {
	return fmt.Errorf("object %s in %s: %w", name, b.location, repo.ErrNotFound)
}

// Get reads the metadata and the first 64 KiB in one op; a larger inline
// object takes one more op (checked to be the same version), a large one
// its parts, concurrently. A replace during the read starts it again.
func (b *Backend) Get(ctx context.Context, name string) ([]byte, error) {
	if err := b.check(ctx, name); err != nil {
		return nil, err
	}
	for try := 0; ; try++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p := make([]byte, firstRead)
		m, n, ok, err := b.readHead(name, 0, p)
		if err != nil {
			return nil, b.opErr("read", name, err)
		}
		if !ok {
			return nil, b.notFound(name)
		}
		if m.parts == 0 && int64(n) >= m.size {
			return p[:m.size], nil
		}
		p = make([]byte, m.size)
		if m.parts > 0 {
			err = b.readRange(m, p, 0)
		} else {
			var again meta
			again, n, ok, err = b.readHead(name, 0, p)
			switch {
			case err == nil && !ok:
				return nil, b.notFound(name)
			case err == nil && again.nonce != m.nonce:
				err = errPartGone // replaced between the two reads
			case err == nil && int64(n) < m.size:
				err = fmt.Errorf("%d of its %d bytes came back: the object is damaged", n, m.size)
			}
		}
		if errors.Is(err, errPartGone) && try < 3 {
			continue
		}
		if err != nil {
			return nil, b.opErr("read", name, err)
		}
		return p, nil
	}
}

// ReadAt reads from the head (inline objects: one op with the metadata)
// or from the parts the range touches, concurrently.
func (b *Backend) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := b.check(ctx, name); err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("read object %s: negative offset %d", name, off)
	}
	if m, ok := b.layouts.get(name); ok && off+int64(len(p)) <= m.size {
		err := b.readRange(m, p, off)
		if err == nil {
			return nil
		}
		b.layouts.drop(name)
		if !errors.Is(err, errPartGone) {
			return b.opErr("read", name, err)
		}
		// Replaced or deleted: start from the head.
	}
	for try := 0; ; try++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, n, ok, err := b.readHead(name, off, p)
		if err != nil {
			return b.opErr("read", name, err)
		}
		if !ok {
			return b.notFound(name)
		}
		if off+int64(len(p)) > m.size {
			return fmt.Errorf("read object %s in %s: %d bytes at offset %d of a %d-byte object: %w", name, b.location, len(p), off, m.size, io.ErrUnexpectedEOF)
		}
		if m.parts == 0 {
			if n != len(p) {
				return fmt.Errorf("read object %s in %s: %d of %d bytes at offset %d came back: the object is damaged", name, b.location, n, len(p), off)
			}
			return nil
		}
		err = b.readRange(m, p, off)
		if errors.Is(err, errPartGone) && try < 3 {
			continue
		}
		if errors.Is(err, errPartGone) {
			return b.notFound(name)
		}
		if err == nil {
			b.layouts.put(name, m)
		}
		if err != nil {
			return b.opErr("read", name, err)
		}
		return nil
	}
}

// Stat reads the metadata record alone.
func (b *Backend) Stat(ctx context.Context, name string) (repo.Info, error) {
	if err := b.check(ctx, name); err != nil {
		return repo.Info{}, err
	}
	m, ok, err := b.readMeta(name)
	if err != nil {
		return repo.Info{}, b.opErr("stat", name, err)
	}
	if !ok {
		return repo.Info{}, fmt.Errorf("object %s in %s: %w", name, b.location, repo.ErrNotFound)
	}
	return repo.Info{Name: name, Size: m.size, ModTime: m.modTime}, nil
}

// Delete marks the index entry pending, removes the head (readers see the
// object gone at once), then its parts and the entry.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := b.check(ctx, name); err != nil {
		return err
	}
	b.layouts.drop(name)
	m, ok, err := b.readMeta(name)
	if err != nil {
		return b.opErr("delete", name, err)
	}
	if !ok {
		b.rmEntry(name) //nolint:errcheck // a stale entry, if any
		return fmt.Errorf("delete object %s in %s: %w", name, b.location, repo.ErrNotFound)
	}
	if err := b.setEntry(name, entry{pending: true, size: m.size, modTime: m.modTime, nonce: m.nonce, parts: m.parts}); err != nil {
		return b.opErr("delete", name, err)
	}
	if err := b.io.Delete(name); err != nil {
		if errno(err) == -2 {
			b.rmEntry(name) //nolint:errcheck
			return fmt.Errorf("delete object %s in %s: %w", name, b.location, repo.ErrNotFound)
		}
		return b.opErr("delete", name, err)
	}
	b.deleteParts(m)
	if err := b.rmEntry(name); err != nil {
		return b.opErr("delete (index entry of)", name, err)
	}
	return nil
}

// errno is the (negative) Ceph error code inside err, or 0.
func errno(err error) int {
	var oe rados.OperationError
	if errors.As(err, &oe) {
		if oe.OpError != nil {
			if c := errno(oe.OpError); c != 0 {
				return c
			}
		}
		for _, e := range oe.StepErrors {
			if c := errno(e); c != 0 {
				return c
			}
		}
		return 0
	}
	var ce interface{ ErrorCode() int }
	if errors.As(err, &ce) {
		return ce.ErrorCode()
	}
	return 0
}

// opErr names the object, the repository and, for the errors an operator
// can act on, what to do.
func (b *Backend) opErr(op, name string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s object %s in %s: %w", op, name, b.location, err)
	}
	hint := ""
	switch errno(err) {
	case -110: // ETIMEDOUT
		hint = fmt.Sprintf(": the Ceph cluster did not answer within %v; check that the OSDs of pool %s are up (`ceph -s`, `ceph osd tree`)", b.timeout, b.pool)
	case -28: // ENOSPC
		hint = fmt.Sprintf(": the Ceph cluster is full; free space or add OSDs to pool %s", b.pool)
	case -122: // EDQUOT
		hint = fmt.Sprintf(": pool %s is over its quota; raise it (`ceph osd pool set-quota`) or free space", b.pool)
	case -1, -13: // EPERM, EACCES
		hint = fmt.Sprintf(": %s may not do this in pool %s; grant it `osd 'allow rwx pool=%s'`", b.client, b.pool, b.pool)
	case -27: // EFBIG
		hint = fmt.Sprintf(": larger than the cluster's osd_max_object_size (parts are %d bytes)", b.partSize)
	}
	return fmt.Errorf("%s object %s in %s: %w%s", op, name, b.location, clean(err), hint)
}

// clean reduces go-ceph's OperationError (which also prints the
// uninitialised results of steps that never ran) to the error that counts.
func clean(err error) error {
	var oe rados.OperationError
	if !errors.As(err, &oe) {
		return err
	}
	if oe.OpError != nil {
		return oe.OpError
	}
	for _, e := range oe.StepErrors {
		return e
	}
	return err
}

var _ repo.Backend = (*Backend)(nil)
