package chunkstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/drivers/repo"
)

// The repository lock (docs/FORMAT.md, "Locks") keeps deleting from racing
// writing across processes, homes and hosts: backups, restores and imports
// hold it shared, anything that deletes packs holds it exclusive. It lives
// in the repository itself, so whoever can reach the repository sees it.
//
// Without a native driver lock every holder writes its own object
// locks/<uuid> and then lists locks/: a conflict makes it delete its own
// object and retry after a random backoff. Since every holder writes before
// it looks, two contenders can never both see the other absent, and both
// backing off at once only costs time. Holders re-write their object every
// lease/4; a holder that stopped doing so (dead host) is taken over once
// its lease and the allowed clock skew have passed, and one whose process
// is dead on this very host at once.

var (
	// ErrLocked is returned (wrapped) when the repository lock could not
	// be taken within the wait; the message names the holder.
	ErrLocked = errors.New("repository locked")
	// ErrLockLost is returned (wrapped) by Lock.Check once the lock could
	// not be refreshed in time: the holder must stop deleting or writing.
	ErrLockLost = errors.New("repository lock lost")
)

// LockOptions tune the lock; zero fields take the defaults.
type LockOptions struct {
	// Lease is how long a lock stays valid after its last refresh
	// (default 2 minutes; refreshed every Lease/4).
	Lease time.Duration
	// Skew is the clock difference tolerated between hosts (default 30 s):
	// another host's lock expires Lease+Skew after its last refresh, and a
	// holder gives its own lock up Lease-Skew after its last refresh.
	Skew time.Duration
}

const (
	defaultLease = 2 * time.Minute
	defaultSkew  = 30 * time.Second
	nativeName   = "volback"
	lockFormat   = "volback-lock"
)

// SetLockOptions changes the lease and skew of locks taken from now on
// (tests use short leases).
func (s *Store) SetLockOptions(o LockOptions) {
	if o.Lease <= 0 {
		o.Lease = defaultLease
	}
	if o.Skew <= 0 || o.Skew >= o.Lease {
		o.Skew = min(defaultSkew, o.Lease/4)
	}
	s.lockOpt = o
}

func (s *Store) lockOptions() LockOptions {
	if s.lockOpt.Lease == 0 {
		return LockOptions{Lease: defaultLease, Skew: defaultSkew}
	}
	return s.lockOpt
}

// LockRequest says which lock to take and why.
type LockRequest struct {
	Exclusive bool
	// Purpose and Owner (the volback home) are shown to whoever finds
	// the repository locked.
	Purpose string
	Owner   string
	// Wait is how long to retry while another holder conflicts; 0 tries once.
	Wait time.Duration
}

// LockInfo is the content of a lock object (and a native lock's
// description).
type LockInfo struct {
	Format      string    `json:"format"` // "volback-lock"
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	Owner       string    `json:"owner"`
	Host        string    `json:"host"`
	MachineID   string    `json:"machine_id"`
	BootID      string    `json:"boot_id"`
	PIDNS       string    `json:"pid_ns"`
	PID         int       `json:"pid"`
	PIDStart    uint64    `json:"pid_start"`
	Purpose     string    `json:"purpose"`
	Exclusive   bool      `json:"exclusive"`
	CreatedAt   time.Time `json:"created_at"`
	RefreshedAt time.Time `json:"refreshed_at"`
	LeaseSecs   float64   `json:"lease_seconds"`
}

// String describes the holder for messages.
func (i LockInfo) String() string {
	kind := "shared"
	if i.Exclusive {
		kind = "exclusive"
	}
	return fmt.Sprintf("%s (%s lock) of %s on host %s, pid %d, since %s", i.Purpose, kind, i.Owner, i.Host, i.PID,
		i.CreatedAt.UTC().Format(time.RFC3339))
}

// Lock is a held repository lock.
type Lock struct {
	s         *Store
	info      LockInfo
	exclusive bool
	native    repo.Locker
	opt       LockOptions

	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan struct{}
	done   chan struct{}

	mu       sync.Mutex
	last     time.Time // refreshed_at of the last refresh that succeeded
	lost     error
	released bool
}

// Lock takes the repository lock, retrying with backoff while another
// holder conflicts, for up to req.Wait. The error then wraps ErrLocked and
// names the holder.
func (s *Store) Lock(ctx context.Context, req LockRequest) (*Lock, error) {
	opt := s.lockOptions()
	me := self()
	t := time.Now().UTC()
	info := LockInfo{Format: lockFormat, Version: 1, ID: uuid.NewString(), Owner: req.Owner,
		Host: me.Host, MachineID: me.MachineID, BootID: me.BootID, PIDNS: me.PIDNS, PID: me.PID, PIDStart: me.PIDStart,
		Purpose: req.Purpose, Exclusive: req.Exclusive, CreatedAt: t, RefreshedAt: t, LeaseSecs: opt.Lease.Seconds()}
	l := &Lock{s: s, info: info, exclusive: req.Exclusive, opt: opt}
	l.native, _ = s.be.(repo.Locker)
	deadline := time.Now().Add(req.Wait)
	backoff := 20 * time.Millisecond
	for {
		holder, err := l.try(ctx)
		if err != nil {
			return nil, err
		}
		if holder == nil {
			break
		}
		if !time.Now().Before(deadline) {
			kind := "shared"
			if req.Exclusive {
				kind = "exclusive"
			}
			return nil, fmt.Errorf("%w: repository %s is held by %s, so the %s lock for %s was not taken%s; wait for it to finish and retry (a holder whose process died on this host is taken over at once, one on another host %s after its last refresh)",
				ErrLocked, s.be.Location(), holder, kind, req.Purpose, waited(req.Wait), opt.Lease+opt.Skew)
		}
		sleep := backoff/2 + rand.N(backoff)
		if left := time.Until(deadline); sleep > left {
			sleep = left
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the lock of repository %s: %w", s.be.Location(), context.Cause(ctx))
		case <-time.After(sleep):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	l.last = l.info.RefreshedAt
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.refresher()
	return l, nil
}

func waited(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return " within " + d.String()
}

// try makes one attempt; it returns the conflicting holder, or nil once
// the lock is held.
func (l *Lock) try(ctx context.Context) (*LockInfo, error) {
	if l.native != nil {
		return l.tryNative(ctx)
	}
	l.info.RefreshedAt = time.Now().UTC()
	if err := l.put(ctx); err != nil {
		return nil, err
	}
	holder, err := l.conflict(ctx)
	if err != nil || holder != nil {
		if derr := l.s.be.Delete(context.WithoutCancel(ctx), l.objName()); derr != nil && !errors.Is(derr, repo.ErrNotFound) && err == nil {
			err = fmt.Errorf("removing our lock object %s after a conflict: %w", l.objName(), derr)
		}
	}
	return holder, err
}

func (l *Lock) objName() string { return locksPrefix + l.info.ID }

func (l *Lock) put(ctx context.Context) error {
	data, _ := json.Marshal(l.info)
	if err := l.s.be.Put(ctx, l.objName(), append(data, '\n')); err != nil {
		return fmt.Errorf("writing lock object %s in %s: %w", l.objName(), l.s.be.Location(), err)
	}
	return nil
}

// conflict lists the lock objects, removes stale ones and returns a live
// holder that conflicts with ours.
func (l *Lock) conflict(ctx context.Context) (*LockInfo, error) {
	var names []repo.Info
	if err := l.s.be.List(ctx, locksPrefix, func(i repo.Info) error { names = append(names, i); return nil }); err != nil {
		return nil, fmt.Errorf("listing the locks of %s: %w", l.s.be.Location(), err)
	}
	var found *LockInfo
	for _, n := range names {
		if n.Name == l.objName() {
			continue
		}
		data, err := l.s.be.Get(ctx, n.Name)
		if errors.Is(err, repo.ErrNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("reading lock object %s: %w", n.Name, err)
		}
		other, perr := parseLockInfo(data)
		if perr != nil {
			// Unreadable: a live exclusive holder until it is older than
			// a lease, so it can never block for good.
			other = LockInfo{Owner: "unknown (unreadable lock object " + n.Name + ")", Exclusive: true,
				RefreshedAt: n.ModTime, CreatedAt: n.ModTime}
		}
		if stale, _ := l.stale(other, n.ModTime); stale {
			if err := l.s.be.Delete(ctx, n.Name); err != nil && !errors.Is(err, repo.ErrNotFound) {
				return nil, fmt.Errorf("removing stale lock object %s (%s): %w", n.Name, other, err)
			}
			continue
		}
		if (l.exclusive || other.Exclusive) && found == nil {
			o := other
			found = &o
		}
	}
	return found, nil
}

func parseLockInfo(data []byte) (LockInfo, error) {
	var i LockInfo
	if err := json.Unmarshal(data, &i); err != nil {
		return i, corruptf("lock object is not valid JSON: %v", err)
	}
	if i.Format != lockFormat {
		return i, corruptf("lock object format %q, want %q", i.Format, lockFormat)
	}
	return i, nil
}

// stale says whether another holder's lock may be removed, and why.
func (l *Lock) stale(o LockInfo, modTime time.Time) (bool, string) {
	me := self()
	if o.Host == me.Host && o.MachineID == me.MachineID {
		if o.BootID != me.BootID && o.MachineID != "" {
			return true, "its host has rebooted since"
		}
		if o.BootID == me.BootID && o.PIDNS == me.PIDNS && !processAlive(o.PID, o.PIDStart) {
			return true, fmt.Sprintf("its process %d is gone", o.PID)
		}
	}
	if l.native != nil {
		return false, "" // the driver expires leases itself
	}
	last := o.RefreshedAt
	if modTime.After(last) {
		last = modTime
	}
	lease := time.Duration(o.LeaseSecs * float64(time.Second))
	if lease <= 0 {
		lease = l.opt.Lease
	}
	if time.Since(last) > lease+l.opt.Skew {
		return true, "its lease expired"
	}
	return false, ""
}

func (l *Lock) tryNative(ctx context.Context) (*LockInfo, error) {
	desc, _ := json.Marshal(l.info)
	var found *LockInfo
	for range 3 { // again at once after breaking stale holders
		err := l.native.Lock(ctx, nativeName, l.info.ID, string(desc), l.exclusive, l.opt.Lease)
		if err == nil {
			return nil, nil
		}
		if !errors.Is(err, repo.ErrLockHeld) {
			return nil, fmt.Errorf("taking the lock of %s: %w", l.s.be.Location(), err)
		}
		if found, err = l.breakNative(ctx); err != nil || found != nil {
			return found, err
		}
	}
	return &LockInfo{Owner: "holders that keep coming and going", Purpose: "unknown"}, nil
}

// breakNative breaks stale native holders and returns a live conflicting one.
func (l *Lock) breakNative(ctx context.Context) (*LockInfo, error) {
	holders, err := l.native.LockHolders(ctx, nativeName)
	if err != nil {
		return nil, fmt.Errorf("listing the lock holders of %s: %w", l.s.be.Location(), err)
	}
	var found *LockInfo
	for _, h := range holders {
		if h.Cookie == l.info.ID {
			continue
		}
		other, perr := parseLockInfo([]byte(h.Desc))
		if perr != nil {
			other = LockInfo{Owner: "unknown (" + h.Client + ")", Exclusive: h.Exclusive}
		}
		other.Exclusive = h.Exclusive
		if stale, _ := l.stale(other, time.Time{}); stale && perr == nil {
			if err := l.native.BreakLock(ctx, nativeName, h); err != nil {
				return nil, fmt.Errorf("breaking the stale lock of %s: %w", other, err)
			}
			continue
		}
		if found == nil && (l.exclusive || other.Exclusive) {
			o := other
			found = &o
		}
	}
	return found, nil
}

// refresher re-writes the lock every lease/4 until Release, and gives the
// lock up when no refresh has succeeded for lease-skew.
func (l *Lock) refresher() {
	defer close(l.done)
	t := time.NewTicker(l.opt.Lease / 4)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.opt.Lease/4)
		when, err := l.refresh(ctx)
		cancel()
		l.mu.Lock()
		// A refresh that ends later than Lease-Skew after the last one
		// (the process stalled) comes too late, even when it succeeded:
		// another host may have taken the lock as expired meanwhile, and
		// its put may have re-created an object that host removed.
		late := time.Since(l.last) > l.opt.Lease-l.opt.Skew
		if err == nil && !late {
			l.last = when
		} else if late || errors.Is(err, ErrLockLost) {
			if err == nil {
				err = errors.New("the process stalled, and the refresh came too late")
			}
			l.lostLocked(err)
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

func (l *Lock) refresh(ctx context.Context) (time.Time, error) {
	when := time.Now().UTC()
	if l.native != nil {
		desc, _ := json.Marshal(l.info)
		if err := l.native.Lock(ctx, nativeName, l.info.ID, string(desc), l.exclusive, l.opt.Lease); err != nil {
			if errors.Is(err, repo.ErrLockHeld) {
				return when, fmt.Errorf("%w: another holder took the lock of %s", ErrLockLost, l.s.be.Location())
			}
			return when, err
		}
		return when, nil
	}
	if _, err := l.s.be.Stat(ctx, l.objName()); errors.Is(err, repo.ErrNotFound) {
		return when, fmt.Errorf("%w: lock object %s of %s was removed by another process (it took this one for dead)", ErrLockLost, l.objName(), l.s.be.Location())
	}
	l.info.RefreshedAt = when
	return when, l.put(ctx)
}

func (l *Lock) lostLocked(err error) {
	if l.lost == nil {
		if !errors.Is(err, ErrLockLost) {
			err = fmt.Errorf("%w: the lock of repository %s could not be refreshed for %s: %v", ErrLockLost, l.s.be.Location(), l.opt.Lease-l.opt.Skew, err)
		}
		l.lost = err
		l.cancel(err)
	}
}

// Check returns an error wrapping ErrLockLost once the lock is no longer
// safely held. Code that deletes calls it before every batch.
func (l *Lock) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return fmt.Errorf("%w: the lock of %s was released", ErrLockLost, l.s.be.Location())
	}
	if l.lost == nil && time.Since(l.last) > l.opt.Lease-l.opt.Skew {
		l.lostLocked(errors.New("no refresh succeeded in time"))
	}
	return l.lost
}

// Exclusive reports whether this is the exclusive lock.
func (l *Lock) Exclusive() bool { return l.exclusive }

// Bind returns a context derived from parent that is also cancelled, with
// the ErrLockLost cause, when the lock is lost.
func (l *Lock) Bind(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := context.AfterFunc(l.ctx, func() { cancel(context.Cause(l.ctx)) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// Release gives the lock up. It is safe to call more than once.
func (l *Lock) Release() error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.cancel(fmt.Errorf("%w: released", ErrLockLost))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if l.native != nil {
		return l.native.Unlock(ctx, nativeName, l.info.ID)
	}
	if err := l.s.be.Delete(ctx, l.objName()); err != nil && !errors.Is(err, repo.ErrNotFound) {
		return fmt.Errorf("removing lock object %s of %s: %w (it expires by itself)", l.objName(), l.s.be.Location(), err)
	}
	return nil
}

// identity is this process as lock objects describe it.
type identity struct {
	Host, MachineID, BootID, PIDNS string
	PID                            int
	PIDStart                       uint64
}

var (
	selfOnce sync.Once
	selfID   identity
)

func self() identity {
	selfOnce.Do(func() {
		selfID.Host, _ = os.Hostname()
		selfID.MachineID = readTrim("/etc/machine-id")
		selfID.BootID = readTrim("/proc/sys/kernel/random/boot_id")
		selfID.PIDNS, _ = os.Readlink("/proc/self/ns/pid")
		selfID.PID = os.Getpid()
		selfID.PIDStart, _ = pidStart(selfID.PID)
	})
	return selfID
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// pidStart is field 22 of /proc/<pid>/stat: the process's start time in
// clock ticks since boot, which tells a reused pid from the original.
func pidStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 { // fields 3.. follow the name; starttime is field 22
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// processAlive reports whether pid runs and is the process that started at
// start (0: unknown, then any process with that pid counts).
func processAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z") {
		return false // a zombie: killed, not yet reaped
	}
	got, err := pidStart(pid)
	if err != nil {
		return false
	}
	return start == 0 || got == start
}
