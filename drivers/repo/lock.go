package repo

import (
	"context"
	"errors"
	"time"
)

// ErrLockHeld is returned (wrapped) by Locker.Lock when another holder's
// lock conflicts with the one asked for.
var ErrLockHeld = errors.New("lock held by another holder")

// Locker is implemented by drivers with a native lease lock (RADOS's cls
// lock). chunkstore takes the repository lock through it when the driver
// has one, and through lock objects (Put, List, Delete under "locks/")
// otherwise; the protocol above it (owner, host, pid, lease, takeover of
// dead holders) is the same either way and lives in chunkstore.
type Locker interface {
	// Lock takes the lock `name` for cookie, or renews it when cookie
	// already holds it. An exclusive lock conflicts with every other
	// holder; a shared one only with an exclusive holder. The lock lapses
	// by itself when lease passes without a renewal. desc is stored with
	// the lock and returned by LockHolders (chunkstore puts the holder's
	// owner, host and pid there).
	Lock(ctx context.Context, name, cookie, desc string, exclusive bool, lease time.Duration) error
	// Unlock releases cookie's hold; releasing a lock not held is not an error.
	Unlock(ctx context.Context, name, cookie string) error
	// LockHolders lists the current holders of `name`.
	LockHolders(ctx context.Context, name string) ([]LockHolder, error)
	// BreakLock removes another holder's lock (one whose process is dead).
	BreakLock(ctx context.Context, name string, h LockHolder) error
}

// LockHolder is one holder of a native lock.
type LockHolder struct {
	Cookie    string
	Desc      string
	Exclusive bool
	Client    string // the driver's own client id (RADOS: client.4123), for BreakLock
}
