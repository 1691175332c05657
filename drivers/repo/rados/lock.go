//go:build ceph

package rados

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/volback/volback/drivers/repo"
)

// The native lock is RADOS's cls lock on object "volback.lock.<name>". A
// holder is (client instance, cookie); a lease (duration) makes an
// abandoned lock lapse by itself. cls lock does not return descriptions,
// so each holder's description is also kept in the lock object's omap
// under "desc.<cookie>".
//
// A hold belongs to the connection that took it: renewing needs the same
// client instance and cookie, so after a reconnect the old hold must lapse
// or be broken. go-ceph's ListLockers reads into 1 KiB buffers, which
// limits LockHolders to a few dozen holders of one lock.

// lockTag is the tag every shared holder uses (cls lock refuses mixed tags).
const lockTag = "volback"

// renew is LIBRADOS_LOCK_FLAG_MAY_RENEW: locking again with the same
// client and cookie renews the lease instead of failing with EEXIST.
var renew byte = 1

func lockOID(name string) string { return reserved + "lock." + name }

func descKey(cookie string) string { return "desc." + cookie }

func checkLock(name, cookie string) error {
	if name == "" || cookie == "" || strings.ContainsRune(name+cookie, 0) {
		return fmt.Errorf("lock %q with cookie %q: the lock name and the cookie must be non-empty and without NUL bytes", name, cookie)
	}
	return nil
}

// Lock implements repo.Locker.
func (b *Backend) Lock(ctx context.Context, name, cookie, desc string, exclusive bool, lease time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkLock(name, cookie); err != nil {
		return err
	}
	oid := lockOID(name)
	var ret int
	var err error
	if exclusive {
		ret, err = b.io.LockExclusive(oid, name, cookie, desc, lease, &renew)
	} else {
		ret, err = b.io.LockShared(oid, name, cookie, lockTag, desc, lease, &renew)
	}
	switch {
	case err != nil:
		return b.lockErr("take", name, err)
	case ret == -16: // EBUSY
		return fmt.Errorf("lock %s in %s: %w%s", name, b.location, repo.ErrLockHeld, b.describeHolders(name))
	case ret != 0:
		return fmt.Errorf("lock %s in %s: unexpected cls lock result %d", name, b.location, ret)
	}
	if err := b.io.SetOmap(oid, map[string][]byte{descKey(cookie): []byte(desc)}); err != nil {
		return b.lockErr("record the description of", name, err)
	}
	return nil
}

// describeHolders says who holds a lock, for the conflict message.
func (b *Backend) describeHolders(name string) string {
	hs, err := b.LockHolders(context.Background(), name)
	if err != nil || len(hs) == 0 {
		return ""
	}
	var s []string
	for _, h := range hs {
		s = append(s, fmt.Sprintf("%s cookie %s (%s)", h.Client, h.Cookie, h.Desc))
	}
	kind := "shared"
	if hs[0].Exclusive {
		kind = "exclusively"
	}
	return fmt.Sprintf(" (held %s by %s)", kind, strings.Join(s, ", "))
}

// Unlock implements repo.Locker.
func (b *Backend) Unlock(ctx context.Context, name, cookie string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkLock(name, cookie); err != nil {
		return err
	}
	ret, err := b.io.Unlock(lockOID(name), name, cookie)
	if err != nil {
		return b.lockErr("release", name, err)
	}
	if ret == 0 {
		b.io.RmOmapKeys(lockOID(name), []string{descKey(cookie)}) //nolint:errcheck // a stale description is ignored
	}
	return nil
}

// LockHolders implements repo.Locker. Lapsed holders are not listed (cls
// lock drops them when it reads the lock).
func (b *Backend) LockHolders(ctx context.Context, name string) ([]repo.LockHolder, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	oid := lockOID(name)
	info, err := b.io.ListLockers(oid, name)
	if errors.Is(err, rados.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, b.lockErr("list the holders of", name, err)
	}
	if info.NumLockers == 0 {
		return nil, nil
	}
	descs, err := b.io.GetOmapValues(oid, "", "desc.", 10000)
	if err != nil && !errors.Is(err, rados.ErrNotFound) {
		return nil, b.lockErr("read the holders' descriptions of", name, err)
	}
	hs := make([]repo.LockHolder, 0, info.NumLockers)
	for i := 0; i < info.NumLockers && i < len(info.Clients) && i < len(info.Cookies); i++ {
		hs = append(hs, repo.LockHolder{
			Cookie:    info.Cookies[i],
			Desc:      string(descs[descKey(info.Cookies[i])]),
			Exclusive: info.Exclusive,
			Client:    info.Clients[i],
		})
	}
	return hs, nil
}

// BreakLock implements repo.Locker.
func (b *Backend) BreakLock(ctx context.Context, name string, h repo.LockHolder) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkLock(name, h.Cookie); err != nil {
		return err
	}
	ret, err := b.io.BreakLock(lockOID(name), name, h.Client, h.Cookie)
	if err != nil {
		return b.lockErr("break", name, err)
	}
	if ret == -22 { // EINVAL
		return fmt.Errorf("break lock %s in %s: %q is not a RADOS client name (use LockHolder.Client from LockHolders)", name, b.location, h.Client)
	}
	if ret == 0 {
		b.io.RmOmapKeys(lockOID(name), []string{descKey(h.Cookie)}) //nolint:errcheck
	}
	return nil
}

func (b *Backend) lockErr(op, name string, err error) error {
	return b.opErr(op+" lock", name, err)
}

var _ repo.Locker = (*Backend)(nil)
