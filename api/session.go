package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/volback/volback/service"
)

// Session is a Caller for the catalog of one home that outlives the
// process owning it. It is a client of the owner, or the owner itself
// (serving the socket until Close). When the owner goes away, the next call
// follows whichever process owns the catalog now, or makes this process the
// owner. A call is made again on the new owner only when that is safe: the
// old owner never accepted it, or the verb changes nothing (idempotent).
type Session struct {
	cfg service.Config
	log *log.Logger

	mu       sync.Mutex
	dir      *socketDir     // nil until the socket directory exists
	cur      service.Caller // *owner or *Remote; nil after a failed hand-over
	closed   bool
	handover *log.Logger // reports hand-overs when set (long-lived mounts)
}

var (
	// ownerWait is how long a process waits for a catalog lock holder that
	// does not answer on the socket (it may be recovering an interrupted
	// job before it serves).
	ownerWait = 30 * time.Second
	// maxHandovers bounds how many owners in a row one call follows.
	maxHandovers = 10
)

// dyingOwner is how long an owner whose connection broke is taken for
// dying rather than still serving.
const dyingOwner = 2 * time.Second

// Connect returns a Session for the catalog in cfg.Home: a client of the
// process that owns it if one answers on the socket, else this process
// becomes the owner and serves the socket until Close.
func Connect(ctx context.Context, cfg service.Config, logger *log.Logger) (*Session, error) {
	if logger == nil {
		logger = log.New(os.Stderr, "volback: ", 0)
	}
	s := &Session{cfg: cfg, log: logger}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.connect(ctx, 0); err != nil {
		if s.dir != nil {
			s.dir.Close()
		}
		return nil, err
	}
	return s, nil
}

// Own is Connect for `volback serve`: it must own the catalog. An owner
// that is only running one CLI verb leaves soon, so it waits up to wait
// for the catalog to become free, then refuses naming the owner.
func Own(ctx context.Context, cfg service.Config, logger *log.Logger, wait time.Duration) (*Session, error) {
	deadline := time.Now().Add(wait)
	for {
		s, err := Connect(ctx, cfg, logger)
		if err != nil {
			return nil, err
		}
		if svc := s.LocalService(); svc != nil {
			svc.StartHeartbeat() // a long-lived owner: service-list tells when it stalls
			return s, nil
		}
		pid := s.OwnerPID()
		s.Close()
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("another volback process (pid %d) owns the catalog in %s and serves it on %s; stop it first (its clients then move to this one)",
				pid, cfg.Home, SocketPath(cfg.Home))
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// connect finds the owner or becomes it. gone is the pid of an owner that
// went away: a process that dies closes its connections before its
// listener, so it may still accept one for a moment; it is skipped for
// dyingOwner. s.mu is held.
func (s *Session) connect(ctx context.Context, gone int32) error {
	start := time.Now()
	holder, since := -1, start
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.dir == nil {
			d, err := openSocketDir(s.cfg.Home, false, s.cfg.Shared())
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			s.dir = d
		}
		if s.dir != nil {
			r, err := dialOwner(ctx, s.dir)
			if err == nil && (r.pid != gone || time.Since(start) > dyingOwner) {
				s.cur = r
				return nil
			}
			if err == nil {
				r.Close()
			} else if !errors.Is(err, errNoOwner) {
				return err
			}
		}
		svc, err := service.Open(ctx, s.cfg, s.log)
		if err == nil {
			if s.dir == nil {
				if s.dir, err = openSocketDir(s.cfg.Home, true, s.cfg.Shared()); err != nil {
					svc.Close()
					return err
				}
			}
			o, err := serveOwner(svc, s.dir)
			if err != nil {
				return err
			}
			s.cur = o
			return nil
		}
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("no volback process serves the catalog in %s, and uid %d may not open it itself (%w): ask its admin to run 'volback serve' for this home",
				s.cfg.Home, os.Geteuid(), err)
		}
		if !errors.Is(err, service.ErrCatalogLocked) {
			return err
		}
		// The holder is starting (recovery runs before it serves) or
		// leaving. Wait while it changes; give up on one that hangs.
		if pid := service.CatalogHolder(s.cfg.Home); pid != holder {
			holder, since = pid, time.Now()
		} else if time.Since(since) > ownerWait {
			return fmt.Errorf("another volback process (pid %d) holds the catalog in %s but has not answered on %s for %v: it may still be recovering an interrupted job, or be stuck; wait and try again, or stop it",
				holder, filepath.Join(s.cfg.Home, "catalog"), SocketPath(s.cfg.Home), ownerWait)
		}
		if err := sleep(ctx, time.Duration(20+rand.IntN(80))*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Call runs verb on the owner, following hand-overs (see Session).
func (s *Session) Call(ctx context.Context, verb string, req, resp any, p service.ProgressFunc) error {
	for n := 0; ; n++ {
		c, err := s.current(ctx)
		if err != nil {
			return err
		}
		err = c.Call(ctx, verb, req, resp, p)
		var lost *lostOwnerError
		if !errors.As(err, &lost) || ctx.Err() != nil {
			return err
		}
		if lost.accepted && !idempotent(verb) {
			// Reconnect first: whoever owns the catalog now (maybe this
			// process) has rolled back what the old owner left unfinished.
			s.reconnect(ctx, c)
			hint := ""
			if o, ok := ops[verb]; ok {
				hint = o.Unknown
			}
			if hint == "" {
				hint = "check with 'volback list' and 'volback backup-list' before running it again"
			}
			return fmt.Errorf("%s: the volback process that owned the catalog (pid %d) exited after it accepted the call and before it answered, so whether %s took effect is unknown: %s",
				verb, lost.pid, verb, hint)
		}
		if n == maxHandovers {
			return fmt.Errorf("%w (%d owners in a row went away; try again)", lost, n+1)
		}
		if err := s.reconnect(ctx, c); err != nil {
			return fmt.Errorf("%s: the volback process that owned the catalog (pid %d) went away, and taking over failed: %w", verb, lost.pid, err)
		}
	}
}

// current is the caller to use, connecting after a failed hand-over.
func (s *Session) current(ctx context.Context) (service.Caller, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("the volback session is closed")
	}
	if s.cur == nil {
		if err := s.connect(ctx, 0); err != nil {
			return nil, err
		}
		s.reportHandover(0)
	}
	return s.cur, nil
}

// reconnect replaces failed, unless another goroutine already did.
func (s *Session) reconnect(ctx context.Context, failed service.Caller) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("the volback session is closed")
	}
	if s.cur != failed {
		return nil
	}
	var old int32
	if r, ok := failed.(*Remote); ok {
		old = r.pid
	}
	s.cur = nil
	failed.Close()
	if err := s.connect(ctx, old); err != nil {
		return err
	}
	s.reportHandover(old)
	return nil
}

func (s *Session) reportHandover(old int32) {
	if s.handover == nil {
		return
	}
	gone := "the catalog's owner is gone"
	if old != 0 {
		gone = fmt.Sprintf("the catalog's owner (pid %d) is gone", old)
	}
	if r, ok := s.cur.(*Remote); ok {
		s.handover.Printf("%s; following the new owner (pid %d)", gone, r.pid)
	} else {
		s.handover.Printf("%s; this process owns the catalog now and serves %s", gone, SocketPath(s.cfg.Home))
	}
}

// ReportHandovers logs each hand-over to l (for long-lived processes).
func (s *Session) ReportHandovers(l *log.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handover = l
}

// Owner reports whether this process owns the catalog now.
func (s *Session) Owner() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.cur.(*owner)
	return ok
}

// OwnerPID is the pid of the process that owns the catalog, as last seen.
func (s *Session) OwnerPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.cur.(*Remote); ok {
		return int(r.pid)
	}
	return os.Getpid()
}

// LocalService is the Service when this process owns the catalog, else
// nil.
func (s *Session) LocalService() *service.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.cur.(*owner); ok {
		return o.S
	}
	return nil
}

// Close ends the session: as the owner, after the calls in progress.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.cur != nil {
		err = s.cur.Close()
		s.cur = nil
	}
	if s.dir != nil {
		s.dir.Close()
	}
	return err
}
