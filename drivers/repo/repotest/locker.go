package repotest

import (
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/volback/volback/drivers/repo"
)

// RunLocker runs the native lock suite on a driver that implements
// repo.Locker. open must return two clients of one fresh repository (two
// connections, as two hosts would have); RunLocker closes them.
func RunLocker(t *testing.T, open func(t *testing.T) (a, b repo.Backend)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, a, b repo.Locker)
	}{
		{"ExclusiveConflicts", testLockExclusive},
		{"SharedCompatible", testLockShared},
		{"Renew", testLockRenew},
		{"LeaseExpires", testLockLease},
		{"Unlock", testUnlock},
		{"Break", testBreakLock},
		{"NamesIndependent", testLockNames},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := open(t)
			t.Cleanup(func() {
				for _, be := range []repo.Backend{a, b} {
					if err := be.Close(); err != nil {
						t.Errorf("Close: %v", err)
					}
				}
			})
			la, ok1 := a.(repo.Locker)
			lb, ok2 := b.(repo.Locker)
			if !ok1 || !ok2 {
				t.Fatalf("%T does not implement repo.Locker", a)
			}
			tc.fn(t, la, lb)
		})
	}
}

const lockName = "repository"

func lock(t *testing.T, l repo.Locker, cookie string, exclusive bool, lease time.Duration) {
	t.Helper()
	if err := l.Lock(ctx, lockName, cookie, "desc of "+cookie, exclusive, lease); err != nil {
		t.Fatalf("Lock %s (exclusive %v): %v", cookie, exclusive, err)
	}
}

func refused(t *testing.T, l repo.Locker, cookie string, exclusive bool) {
	t.Helper()
	err := l.Lock(ctx, lockName, cookie, "", exclusive, time.Minute)
	if !errors.Is(err, repo.ErrLockHeld) {
		t.Fatalf("Lock %s (exclusive %v) while held: %v, want repo.ErrLockHeld", cookie, exclusive, err)
	}
}

// holders returns "cookie:exclusive" for each holder, sorted, and checks
// every holder has a client id and the description it locked with.
func holders(t *testing.T, l repo.Locker) string {
	t.Helper()
	hs, err := l.LockHolders(ctx, lockName)
	if err != nil {
		t.Fatalf("LockHolders: %v", err)
	}
	var s []string
	for _, h := range hs {
		if h.Client == "" || h.Desc != "desc of "+h.Cookie {
			t.Fatalf("holder %+v: want a client id and the description %q", h, "desc of "+h.Cookie)
		}
		s = append(s, fmt.Sprintf("%s:%v", h.Cookie, h.Exclusive))
	}
	sort.Strings(s)
	return fmt.Sprint(s)
}

func testLockExclusive(t *testing.T, a, b repo.Locker) {
	lock(t, a, "a1", true, time.Minute)
	refused(t, b, "b1", true)
	refused(t, b, "b1", false)
	refused(t, a, "a2", true) // another cookie is another holder, even on the same client
	refused(t, a, "a2", false)
	if got := holders(t, b); got != "[a1:true]" {
		t.Fatalf("holders seen by the other client: %s, want [a1:true]", got)
	}
}

func testLockShared(t *testing.T, a, b repo.Locker) {
	lock(t, a, "a1", false, time.Minute)
	lock(t, b, "b1", false, time.Minute)
	refused(t, a, "a2", true)
	refused(t, b, "b1", true) // b1 may not upgrade while a1 shares
	if got := holders(t, a); got != "[a1:false b1:false]" {
		t.Fatalf("holders: %s, want [a1:false b1:false]", got)
	}
}

// testLockRenew keeps a short lease alive by renewing it with the same
// cookie; the other client stays out the whole time.
func testLockRenew(t *testing.T, a, b repo.Locker) {
	const lease = 2 * time.Second
	lock(t, a, "a1", true, lease)
	end := time.Now().Add(2 * lease)
	for time.Now().Before(end) {
		time.Sleep(lease / 4)
		lock(t, a, "a1", true, lease) // renewal, not a conflict with itself
		refused(t, b, "b1", true)
	}
	if got := holders(t, b); got != "[a1:true]" {
		t.Fatalf("holders after renewals: %s, want [a1:true]", got)
	}
}

func testLockLease(t *testing.T, a, b repo.Locker) {
	const lease = time.Second
	lock(t, a, "a1", true, lease)
	refused(t, b, "b1", true)
	deadline := time.Now().Add(lease + 5*time.Second)
	for b.Lock(ctx, lockName, "b1", "desc of b1", true, time.Minute) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("a lock with a %v lease still blocks another holder %v after it was taken", lease, lease+5*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := holders(t, a); got != "[b1:true]" {
		t.Fatalf("holders after the lease lapsed: %s, want [b1:true]", got)
	}
}

func testUnlock(t *testing.T, a, b repo.Locker) {
	lock(t, a, "a1", true, time.Minute)
	// Another client cannot release a1's hold by naming its cookie.
	if err := b.Unlock(ctx, lockName, "a1"); err != nil {
		t.Fatalf("Unlock of a cookie this client does not hold: %v, want nil", err)
	}
	refused(t, b, "b1", true)
	if err := a.Unlock(ctx, lockName, "a1"); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if err := a.Unlock(ctx, lockName, "a1"); err != nil {
		t.Fatalf("second Unlock: %v, want nil", err)
	}
	if got := holders(t, b); got != "[]" {
		t.Fatalf("holders after Unlock: %s, want none", got)
	}
	lock(t, b, "b1", true, time.Minute)
}

// testBreakLock: a holder without a lease (a dead process) is removed by
// another client that found it in LockHolders.
func testBreakLock(t *testing.T, a, b repo.Locker) {
	lock(t, a, "a1", true, 0)
	hs, err := b.LockHolders(ctx, lockName)
	if err != nil || len(hs) != 1 {
		t.Fatalf("LockHolders: %v, %v", hs, err)
	}
	if err := b.BreakLock(ctx, lockName, hs[0]); err != nil {
		t.Fatalf("BreakLock: %v", err)
	}
	lock(t, b, "b1", true, time.Minute)
	if got := holders(t, a); got != "[b1:true]" {
		t.Fatalf("holders after BreakLock: %s, want [b1:true]", got)
	}
	if err := b.BreakLock(ctx, lockName, hs[0]); err != nil {
		t.Fatalf("BreakLock of a holder that is gone: %v, want nil", err)
	}
}

func testLockNames(t *testing.T, a, b repo.Locker) {
	lock(t, a, "a1", true, time.Minute)
	if err := b.Lock(ctx, "another", "b1", "", true, time.Minute); err != nil {
		t.Fatalf("Lock of another name: %v", err)
	}
	if hs, err := b.LockHolders(ctx, "never-locked"); err != nil || len(hs) != 0 {
		t.Fatalf("LockHolders of a lock never taken: %v, %v; want none", hs, err)
	}
}
