package mem

import (
	"context"
	"fmt"
	"time"

	"github.com/volback/volback/drivers/repo"
)

// lockState is one named lock: its holders and whether they hold it
// exclusively. It mirrors RADOS's cls lock: a holder is (client, cookie),
// a lease lapses by itself, and only the same client and cookie renew.
type lockState struct {
	exclusive bool
	holders   map[holderID]holder
}

type holderID struct{ client, cookie string }

type holder struct {
	desc    string
	expires time.Time // zero: no lease
}

// now is the lock's clock.
var now = time.Now

// live drops lapsed holders and reports whether any remain. mu held.
func (l *lockState) live() bool {
	t := now()
	for id, h := range l.holders {
		if !h.expires.IsZero() && !t.Before(h.expires) {
			delete(l.holders, id)
		}
	}
	return len(l.holders) > 0
}

// Lock implements repo.Locker.
func (b *Backend) Lock(ctx context.Context, name, cookie, desc string, exclusive bool, lease time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if name == "" || cookie == "" {
		return fmt.Errorf("lock %q with cookie %q: the lock name and the cookie must not be empty", name, cookie)
	}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	l := b.s.locks[name]
	if l == nil {
		l = &lockState{holders: map[holderID]holder{}}
		b.s.locks[name] = l
	}
	// As cls lock: the caller's own hold is replaced (a renewal, which may
	// change the kind), and any other live holder conflicts unless both
	// are shared.
	id := holderID{b.client, cookie}
	l.live()
	others := len(l.holders)
	if _, mine := l.holders[id]; mine {
		others--
	}
	if others > 0 && (exclusive || l.exclusive) {
		return fmt.Errorf("lock %s in %s: %w (held %s by %d other holder(s))", name, b.location, repo.ErrLockHeld, kind(l.exclusive), others)
	}
	l.exclusive = exclusive
	h := holder{desc: desc}
	if lease > 0 {
		h.expires = now().Add(lease)
	}
	l.holders[id] = h
	return nil
}

func kind(exclusive bool) string {
	if exclusive {
		return "exclusively"
	}
	return "shared"
}

// Unlock implements repo.Locker.
func (b *Backend) Unlock(ctx context.Context, name, cookie string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if l := b.s.locks[name]; l != nil {
		delete(l.holders, holderID{b.client, cookie})
	}
	return nil
}

// LockHolders implements repo.Locker.
func (b *Backend) LockHolders(ctx context.Context, name string) ([]repo.LockHolder, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	l := b.s.locks[name]
	if l == nil || !l.live() {
		return nil, nil
	}
	var hs []repo.LockHolder
	for id, h := range l.holders {
		hs = append(hs, repo.LockHolder{Cookie: id.cookie, Desc: h.desc, Exclusive: l.exclusive, Client: id.client})
	}
	return hs, nil
}

// BreakLock implements repo.Locker.
func (b *Backend) BreakLock(ctx context.Context, name string, h repo.LockHolder) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if l := b.s.locks[name]; l != nil {
		delete(l.holders, holderID{h.Client, h.Cookie})
	}
	return nil
}

var _ repo.Locker = (*Backend)(nil)
