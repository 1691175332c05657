package chunkstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/repo/mem"
	"github.com/volback/volback/drivers/repo/posix"
)

func lockStore(t *testing.T, be repo.Backend) *Store {
	t.Helper()
	s, err := Init(context.Background(), be, DefaultChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func posixStore(t *testing.T) *Store {
	t.Helper()
	be, err := posix.Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return lockStore(t, be)
}

func take(t *testing.T, s *Store, excl bool, purpose string, wait time.Duration) *Lock {
	t.Helper()
	l, err := s.Lock(context.Background(), LockRequest{Exclusive: excl, Purpose: purpose, Owner: "/home/test", Wait: wait})
	if err != nil {
		t.Fatalf("lock %s: %v", purpose, err)
	}
	t.Cleanup(func() { l.Release() })
	return l
}

func lockObjects(t *testing.T, s *Store) []string {
	t.Helper()
	var names []string
	s.be.List(context.Background(), locksPrefix, func(i repo.Info) error { names = append(names, i.Name); return nil })
	return names
}

func TestLockConflicts(t *testing.T) {
	ctx := context.Background()
	s := posixStore(t)
	a := take(t, s, false, "backup-create a", 0)
	b := take(t, s, false, "backup-create b", 0) // shared locks coexist
	_, err := s.Lock(ctx, LockRequest{Exclusive: true, Purpose: "repo-gc", Owner: "/home/x", Wait: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive lock while shared ones are held: %v, want ErrLocked", err)
	}
	for _, w := range []string{"backup-create", "pid", "shared lock", "repo-gc", "retry"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not mention %q", err, w)
		}
	}
	if n := len(lockObjects(t, s)); n != 2 {
		t.Errorf("a refused lock left %d lock objects, want the 2 holders'", n)
	}
	a.Release()
	b.Release()
	if n := len(lockObjects(t, s)); n != 0 {
		t.Errorf("%d lock objects after release", n)
	}
	x := take(t, s, true, "repo-gc", 0)
	if _, err := s.Lock(ctx, LockRequest{Purpose: "backup-create c", Owner: "/home/x"}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "repo-gc") {
		t.Fatalf("shared lock while an exclusive one is held: %v", err)
	}
	if err := x.Check(); err != nil {
		t.Fatal(err)
	}
	// A waiter gets the lock once the holder releases it.
	go func() { time.Sleep(150 * time.Millisecond); x.Release() }()
	take(t, s, false, "backup-create d", 5*time.Second)
}

// TestLockMutualExclusion has goroutines take random locks on a real
// directory and checks no exclusive holder ever overlaps another holder.
func TestLockMutualExclusion(t *testing.T) {
	s := posixStore(t)
	var shared, excl atomic.Int32
	var bad atomic.Int32
	var got atomic.Int32
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 8 {
				e := r.IntN(3) == 0
				l, err := s.Lock(context.Background(), LockRequest{Exclusive: e, Purpose: fmt.Sprint("w", w), Wait: 20 * time.Second})
				if err != nil {
					t.Error(err)
					return
				}
				got.Add(1)
				if e {
					if excl.Add(1) != 1 || shared.Load() != 0 {
						bad.Add(1)
					}
				} else if shared.Add(1); excl.Load() != 0 {
					bad.Add(1)
				}
				time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
				if e {
					excl.Add(-1)
				} else {
					shared.Add(-1)
				}
				l.Release()
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d times an exclusive lock overlapped another holder", bad.Load())
	}
	if got.Load() != 48 {
		t.Fatalf("%d locks taken, want 48", got.Load())
	}
}

// putLock writes a lock object as another holder would.
func putLock(t *testing.T, s *Store, info LockInfo) string {
	t.Helper()
	info.Format, info.Version = lockFormat, 1
	if info.ID == "" {
		info.ID = fmt.Sprintf("%08d-0000-0000-0000-000000000000", rand.IntN(1e8))
	}
	data, _ := json.Marshal(info)
	if err := s.be.Put(context.Background(), locksPrefix+info.ID, data); err != nil {
		t.Fatal(err)
	}
	// The object's time is its last refresh too, as the storage saw it.
	if p, ok := s.be.(*posix.Backend); ok {
		path := filepath.Join(p.Root(), "locks", info.ID)
		if err := os.Chtimes(path, info.RefreshedAt, info.RefreshedAt); err != nil {
			t.Fatal(err)
		}
	}
	return locksPrefix + info.ID
}

func deadPID(t *testing.T) (int, uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	start, err := pidStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return pid, start
}

// TestLockTakeover: locks of dead holders are removed without a human,
// live ones are not.
func TestLockTakeover(t *testing.T) {
	me := self()
	now := time.Now().UTC()
	pid, start := deadPID(t)
	for _, tc := range []struct {
		name  string
		info  LockInfo
		stale bool
	}{
		{"dead local pid", LockInfo{Host: me.Host, MachineID: me.MachineID, BootID: me.BootID, PIDNS: me.PIDNS, PID: pid, PIDStart: start, Exclusive: true, RefreshedAt: now, LeaseSecs: 120}, true},
		{"reused pid", LockInfo{Host: me.Host, MachineID: me.MachineID, BootID: me.BootID, PIDNS: me.PIDNS, PID: me.PID, PIDStart: me.PIDStart + 1, Exclusive: true, RefreshedAt: now, LeaseSecs: 120}, true},
		{"rebooted host", LockInfo{Host: me.Host, MachineID: me.MachineID, BootID: "another-boot", PIDNS: me.PIDNS, PID: me.PID, PIDStart: me.PIDStart, Exclusive: true, RefreshedAt: now, LeaseSecs: 120}, true},
		{"expired lease", LockInfo{Host: "elsewhere", PID: 1, Exclusive: true, RefreshedAt: now.Add(-10 * time.Minute), LeaseSecs: 120}, true},
		{"live process here", LockInfo{Host: me.Host, MachineID: me.MachineID, BootID: me.BootID, PIDNS: me.PIDNS, PID: me.PID, PIDStart: me.PIDStart, Exclusive: true, RefreshedAt: now, LeaseSecs: 120}, false},
		{"lease running elsewhere", LockInfo{Host: "elsewhere", PID: 1, Exclusive: true, RefreshedAt: now.Add(-time.Minute), LeaseSecs: 120}, false},
		{"other pid namespace", LockInfo{Host: me.Host, MachineID: me.MachineID, BootID: me.BootID, PIDNS: "pid:[1]", PID: pid, PIDStart: start, Exclusive: true, RefreshedAt: now, LeaseSecs: 120}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := posixStore(t)
			name := putLock(t, s, tc.info)
			l, err := s.Lock(context.Background(), LockRequest{Purpose: "backup-create", Owner: "/h"})
			if tc.stale {
				if err != nil {
					t.Fatalf("lock over a stale holder: %v", err)
				}
				l.Release()
				if objs := lockObjects(t, s); len(objs) != 0 {
					t.Errorf("stale lock object not removed: %v", objs)
				}
				return
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("lock over a live holder: %v, want ErrLocked", err)
			}
			if objs := lockObjects(t, s); len(objs) != 1 || objs[0] != name {
				t.Errorf("live holder's lock object: %v, want only %s", objs, name)
			}
		})
	}
}

// TestLockRefreshAndLoss: a holder keeps its lock alive past its lease by
// refreshing it, and notices (Check, Bind) when another process removed it.
func TestLockRefreshAndLoss(t *testing.T) {
	s := posixStore(t)
	s.SetLockOptions(LockOptions{Lease: 400 * time.Millisecond, Skew: 100 * time.Millisecond})
	l := take(t, s, true, "repo-gc", 0)
	ctx, cancel := l.Bind(context.Background())
	defer cancel()
	time.Sleep(1200 * time.Millisecond) // three leases
	if err := l.Check(); err != nil {
		t.Fatalf("refreshed lock: %v", err)
	}
	if _, err := s.Lock(context.Background(), LockRequest{Purpose: "other"}); !errors.Is(err, ErrLocked) {
		t.Fatalf("a refreshed lock was taken over: %v", err)
	}
	// Another process took us for dead. It goes on removing the object:
	// a refresh that checked it just before a removal puts it back.
	deadline := time.After(2 * time.Second)
	for done := false; !done; {
		for _, n := range lockObjects(t, s) {
			s.be.Delete(context.Background(), n)
		}
		select {
		case <-ctx.Done():
			done = true
		case <-deadline:
			t.Fatal("the bound context was not cancelled after the lock object vanished")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := l.Check(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Check after losing the lock: %v", err)
	}
	if !errors.Is(context.Cause(ctx), ErrLockLost) {
		t.Errorf("bound context cause %v, want ErrLockLost", context.Cause(ctx))
	}
	if err := s.DeletePack(context.Background(), l, ID{1}); !errors.Is(err, ErrLockLost) {
		t.Errorf("DeletePack under a lost lock: %v", err)
	}
}

// TestLockGuards: pack deletion and a new GC generation need the
// exclusive lock, still held; nothing changes when refused.
func TestLockGuards(t *testing.T) {
	ctx := context.Background()
	be := newMemRepo()
	s := lockStore(t, be)
	pack, id, _, err := EncodePack([]PackBlob{{ID: Sum([]byte("x")), Blob: EncodeBlob(nil, []byte("x"), Compression{})}})
	if err != nil {
		t.Fatal(err)
	}
	be.Put(ctx, packName(id), pack)
	sh := take(t, s, false, "backup-create", 0)
	if err := s.DeletePack(ctx, sh, id); err == nil {
		t.Fatal("DeletePack under a shared lock succeeded")
	}
	if err := s.DeletePack(ctx, nil, id); err == nil {
		t.Fatal("DeletePack without a lock succeeded")
	}
	if _, err := s.NewGeneration(ctx, sh); err == nil {
		t.Fatal("NewGeneration under a shared lock succeeded")
	}
	if _, err := s.StatPack(ctx, id); err != nil {
		t.Fatalf("refused deletes removed the pack: %v", err)
	}
	if g, err := s.Generation(ctx); err != nil || g != "" {
		t.Fatalf("generation %q, %v after a refused NewGeneration", g, err)
	}
	sh.Release()
	x := take(t, s, true, "repo-gc", 0)
	g, err := s.NewGeneration(ctx, x)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Generation(ctx); got != g || g == "" {
		t.Fatalf("generation %q, want %q", got, g)
	}
	if err := s.DeletePack(ctx, x, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatPack(ctx, id); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("pack still there after DeletePack: %v", err)
	}
	x.Release()
	if err := s.DeletePack(ctx, x, id); !errors.Is(err, ErrLockLost) {
		t.Fatalf("DeletePack after Release: %v", err)
	}
}

// nativeRepo is a memRepo with a native lease lock, as the RADOS driver has.
type nativeRepo struct {
	*memRepo
	mu      sync.Mutex
	holders map[string]nativeHold
}

type nativeHold struct {
	repo.LockHolder
	until time.Time
}

func (n *nativeRepo) Lock(ctx context.Context, name, cookie, desc string, exclusive bool, lease time.Duration) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for c, h := range n.holders {
		if time.Now().After(h.until) {
			delete(n.holders, c)
			continue
		}
		if c != cookie && (exclusive || h.Exclusive) {
			return fmt.Errorf("lock %s: %w", name, repo.ErrLockHeld)
		}
	}
	n.holders[cookie] = nativeHold{repo.LockHolder{Cookie: cookie, Desc: desc, Exclusive: exclusive, Client: "client." + cookie[:4]}, time.Now().Add(lease)}
	return nil
}

func (n *nativeRepo) Unlock(ctx context.Context, name, cookie string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.holders, cookie)
	return nil
}

func (n *nativeRepo) LockHolders(ctx context.Context, name string) ([]repo.LockHolder, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []repo.LockHolder
	for _, h := range n.holders {
		out = append(out, h.LockHolder)
	}
	return out, nil
}

func (n *nativeRepo) BreakLock(ctx context.Context, name string, h repo.LockHolder) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.holders, h.Cookie)
	return nil
}

// TestNativeLock: with a driver Locker the same protocol runs through it
// (no lock objects), and a dead local holder is broken.
func TestNativeLock(t *testing.T) {
	ctx := context.Background()
	be := &nativeRepo{memRepo: newMemRepo(), holders: map[string]nativeHold{}}
	s := lockStore(t, be)
	a := take(t, s, false, "backup-create", 0)
	if _, err := s.Lock(ctx, LockRequest{Exclusive: true, Purpose: "repo-gc"}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "backup-create") {
		t.Fatalf("exclusive over a native shared holder: %v", err)
	}
	if objs := lockObjects(t, s); len(objs) != 0 {
		t.Errorf("native locking wrote lock objects: %v", objs)
	}
	a.Release()
	me := self()
	pid, start := deadPID(t)
	dead, _ := json.Marshal(LockInfo{Format: lockFormat, Version: 1, ID: "dead", Host: me.Host, MachineID: me.MachineID,
		BootID: me.BootID, PIDNS: me.PIDNS, PID: pid, PIDStart: start, Exclusive: true, Purpose: "repo-gc"})
	be.holders["dead-cookie"] = nativeHold{repo.LockHolder{Cookie: "dead-cookie", Desc: string(dead), Exclusive: true}, time.Now().Add(time.Hour)}
	x := take(t, s, true, "repo-gc", 0)
	if err := x.Check(); err != nil {
		t.Fatal(err)
	}
	if len(be.holders) != 1 {
		t.Errorf("native holders %v, want only ours", be.holders)
	}
}

// TestListPacksCanonicalNames: only lowercase-hex pack names are packs;
// anything else under packs/ is a stray, never judged or deleted as a pack.
func TestListPacksCanonicalNames(t *testing.T) {
	ctx := context.Background()
	be := newMemRepo()
	s := lockStore(t, be)
	id := Sum([]byte("p"))
	be.Put(ctx, packName(id), []byte("x"))
	be.Put(ctx, "packs/"+strings.ToUpper(id.String()), []byte("x"))
	be.Put(ctx, "packs/notapack", []byte("x"))
	var packs, strays []string
	if err := s.ListPacks(ctx, func(p PackInfo) error { packs = append(packs, p.ID.String()); return nil },
		func(name string) { strays = append(strays, name) }); err != nil {
		t.Fatal(err)
	}
	if len(packs) != 1 || packs[0] != id.String() || len(strays) != 2 {
		t.Fatalf("packs %v strays %v", packs, strays)
	}
}

// TestLockOnMemDriver: the native path against the mem:// driver (a lease
// lock like RADOS's cls lock), with two clients of one repository.
func TestLockOnMemDriver(t *testing.T) {
	ctx := context.Background()
	name := fmt.Sprintf("locktest%d", rand.Int64())
	t.Cleanup(func() { mem.Remove(name) })
	open := func() *Store {
		u, _ := url.Parse("mem://" + name)
		be, err := mem.OpenURL(u, true)
		if err != nil {
			t.Fatal(err)
		}
		s, err := OpenOrInit(ctx, be, DefaultChunkSize)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := open(), open()
	sa := take(t, a, false, "backup-create on a", 0)
	take(t, b, false, "backup-create on b", 0)
	if _, err := b.Lock(ctx, LockRequest{Exclusive: true, Purpose: "repo-gc on b"}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "backup-create on") {
		t.Fatalf("exclusive over two shared native holders: %v", err)
	}
	sa.Release()
	if n := len(lockObjects(t, a)); n != 0 {
		t.Errorf("native locking wrote %d lock objects", n)
	}
}

// TestLockLateRefresh: a refresh that succeeds, but later than Lease-Skew
// after the last one (the process stalled), loses the lock: another host
// may have taken it as expired meanwhile.
func TestLockLateRefresh(t *testing.T) {
	s := posixStore(t)
	s.SetLockOptions(LockOptions{Lease: 400 * time.Millisecond, Skew: 100 * time.Millisecond})
	l := take(t, s, true, "repo-gc", 0)
	defer l.Release()
	ctx, cancel := l.Bind(context.Background())
	defer cancel()
	l.mu.Lock()
	l.last = time.Now().Add(-time.Second) // as if stalled past the lease
	l.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("a late refresh kept the lock")
	}
	if !errors.Is(context.Cause(ctx), ErrLockLost) || !strings.Contains(context.Cause(ctx).Error(), "stalled") {
		t.Errorf("cause %v, want ErrLockLost saying the process stalled", context.Cause(ctx))
	}
}
