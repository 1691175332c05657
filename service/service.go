// Package service holds volback's use cases: volumes, backup create /
// restore / delete, garbage collection, and the state machine that keeps
// the catalog and the repositories consistent across failures. The CLI and
// the socket server call it; it talks to index, chunkstore and drivers.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "github.com/volback/volback/drivers/repo/posix" // file:// repositories
	"github.com/volback/volback/drivers/volume"
	_ "github.com/volback/volback/drivers/volume/file" // image files and block devices
	// rados:// and rbd:// are the Ceph plugin's (cmd/volback-ceph).
	"github.com/volback/volback/index"
	"github.com/volback/volback/pipeline"
)

// DefaultProject is the project used when none is given.
const DefaultProject = "admin"

// Service is the one owner of a catalog.
type Service struct {
	cfg Config
	cat *index.Catalog
	log *log.Logger
	ev  *slog.Logger // state changes (logs.go)
	evf io.Closer

	// openSource opens a volume for reading; tests replace it.
	openSource func(*index.Volume) (volume.Source, error)

	mu    sync.Mutex
	zones map[string]*repository // by zone
	repos map[string]*repository // by repository id

	jobs  jobs  // running backups and restores, for cancel (jobs.go)
	stats stats // data moved, for metrics (stats.go)
	// budget is the CPU work all this owner's pipelines may do at once:
	// several backups started together share the cores.
	budget *pipeline.Budget
	// quotaMu serializes this owner's quota claims, so a burst of creates
	// in one project queues instead of exhausting Update's conflict
	// retries on the project's guard key (which stays for correctness).
	quotaMu sync.Mutex

	// Background work (rollbacks that failed and are retried) stops at Close.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	hb       heartbeat // heartbeat.go
}

// Open opens the catalog in cfg.Home (creating the home on first use) and
// resolves operations a previous process left half done.
func Open(ctx context.Context, cfg Config, logger *log.Logger) (*Service, error) {
	if err := os.MkdirAll(cfg.Home, 0o700); err != nil {
		return nil, fmt.Errorf("volback home %s: %v; create it or pass --home", cfg.Home, err)
	}
	cat, err := index.Open(filepath.Join(cfg.Home, "catalog"), index.Options{})
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = log.New(os.Stderr, "volback: ", 0)
	}
	s := &Service{cfg: cfg, cat: cat, log: logger, zones: map[string]*repository{}, repos: map[string]*repository{},
		openSource: func(v *index.Volume) (volume.Source, error) { return volume.OpenSource(v.Path) },
		budget:     pipeline.NewBudget(cfg.Workers)}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	if s.ev, s.evf, err = openEvents(cfg); err != nil {
		cat.Close()
		return nil, err
	}
	if err := s.mergeZones(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.recover(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// ErrCatalogLocked: another process holds the catalog (Open fails with it);
// that process owns the catalog and answers on its socket.
var ErrCatalogLocked = index.ErrLocked

// CatalogHolder is the pid of the process holding the catalog in home, or
// 0 when unknown.
func CatalogHolder(home string) int { return index.LockHolder(filepath.Join(home, "catalog")) }

// Close stops background work and closes the catalog and every repository.
func (s *Service) Close() error {
	s.bgCancel()
	s.bg.Wait()
	s.mu.Lock()
	for _, r := range s.repos {
		r.store.Close()
	}
	s.zones, s.repos = map[string]*repository{}, map[string]*repository{}
	s.mu.Unlock()
	err := s.cat.Close()
	if s.evf != nil {
		s.evf.Close()
	}
	return err
}

// Config returns the configuration the service runs with.
func (s *Service) Config() Config { return s.cfg }

func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// update is Catalog.Update with errors kept as they are.
func (s *Service) update(fn func(*index.Tx) error) error { return s.cat.Update(fn) }

// failed reports whether err is a context cancellation.
func cancelled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
