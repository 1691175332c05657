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

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	_ "github.com/volback/volback/drivers/repo/posix" // file:// repositories
	_ "github.com/volback/volback/drivers/repo/rados" // rados:// (Ceph; built with -tags ceph,pacific, else a stub that says so)
	"github.com/volback/volback/drivers/volume"
	_ "github.com/volback/volback/drivers/volume/file" // image files and block devices
	_ "github.com/volback/volback/drivers/volume/rbd"  // rbd:// (Ceph; built with -tags ceph,pacific, else a stub that says so)
	"github.com/volback/volback/index"
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

	mu     sync.Mutex
	stores map[string]*repository // by zone

	jobs jobs // running backups and restores, for cancel (jobs.go)
	// quotaMu serializes this owner's quota claims, so a burst of creates
	// in one project queues instead of exhausting Update's conflict
	// retries on the project's guard key (which stays for correctness).
	quotaMu sync.Mutex
}

// repository is an opened repository with the lock that keeps pack removal
// (delete, GC) from racing backups that dedup against existing chunks.
type repository struct {
	store *chunkstore.Store
	url   string
	gc    sync.RWMutex // backups hold R; removing packs holds W
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
	s := &Service{cfg: cfg, cat: cat, log: logger, stores: map[string]*repository{},
		openSource: func(v *index.Volume) (volume.Source, error) { return volume.OpenSource(v.Path) }}
	if s.ev, s.evf, err = openEvents(cfg); err != nil {
		cat.Close()
		return nil, err
	}
	if err := s.recover(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the catalog and every repository.
func (s *Service) Close() error {
	s.mu.Lock()
	for _, r := range s.stores {
		r.store.Backend().Close()
	}
	s.stores = map[string]*repository{}
	s.mu.Unlock()
	err := s.cat.Close()
	if s.evf != nil {
		s.evf.Close()
	}
	return err
}

// Config returns the configuration the service runs with.
func (s *Service) Config() Config { return s.cfg }

// repoFor opens (once) the repository serving zone, creating the default
// one on first use.
func (s *Service) repoFor(ctx context.Context, zone string) (*repository, error) {
	if zone == "" {
		zone = s.cfg.DefaultZone
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.stores[zone]; ok {
		return r, nil
	}
	z, ok := s.cfg.Zones[zone]
	if !ok {
		return nil, fmt.Errorf("availability zone %q has no repository; configured zones: %v (add [zones.%s] to %s)",
			zone, s.cfg.ZoneNames(), zone, filepath.Join(s.cfg.Home, ConfigName))
	}
	be, err := repo.Open(ctx, z.Repository, true)
	if err != nil {
		return nil, fmt.Errorf("repository of zone %q: %w", zone, err)
	}
	st, err := chunkstore.OpenOrInit(ctx, be, s.cfg.ChunkSize)
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("repository %s: %w", z.Repository, err)
	}
	r := &repository{store: st, url: z.Repository}
	s.stores[zone] = r
	return r, nil
}

// repoByID finds the opened-or-openable repository whose config id is id.
func (s *Service) repoByID(ctx context.Context, id, zone string) (*repository, error) {
	if r, err := s.repoFor(ctx, zone); err == nil && r.store.Config().ID == id {
		return r, nil
	}
	for _, z := range s.cfg.ZoneNames() {
		r, err := s.repoFor(ctx, z)
		if err == nil && r.store.Config().ID == id {
			return r, nil
		}
	}
	return nil, fmt.Errorf("repository %s is not configured in any zone; add it to %s", id, filepath.Join(s.cfg.Home, ConfigName))
}

func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// update is Catalog.Update with errors kept as they are.
func (s *Service) update(fn func(*index.Tx) error) error { return s.cat.Update(fn) }

// failed reports whether err is a context cancellation.
func cancelled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
