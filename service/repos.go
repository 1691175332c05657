package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/index"
)

// repository is an opened repository. One process opens each repository
// once, keyed by its config id, however many zones name it: the repository
// lock (in the repository) is what orders work on it, between zones,
// homes and hosts alike.
type repository struct {
	store *chunkstore.Store
	url   string
	id    string
	// compression overrides the config's compression_level (repo-init
	// --compression); nil: the config's.
	compression *int

	syncMu sync.Mutex // one chunk-index sync at a time in this process
}

// lockWait is how long backups, restores and GC wait for a conflicting
// holder of the repository lock before giving up.
const lockWait = 10 * time.Minute

// repoFor opens (once) the repository serving zone. A zone that had a
// repository must find the same one (same config id) at its URL: a
// missing directory or another repository is refused, never replaced by a
// new empty one. Only a zone that never had a repository creates one.
func (s *Service) repoFor(ctx context.Context, zone string) (*repository, error) {
	r, err := s.openZone(ctx, zone)
	if err != nil {
		return nil, err
	}
	if err := s.unlock(ctx, r); err != nil {
		return nil, fmt.Errorf("zone %q: %w", cmp.Or(zone, s.cfg.DefaultZone), err)
	}
	return r, nil
}

// openZone is repoFor without unlocking: enough to list objects.
func (s *Service) openZone(ctx context.Context, zone string) (*repository, error) {
	if zone == "" {
		zone = s.cfg.DefaultZone
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.zones[zone]; ok {
		return r, nil
	}
	z, ok := s.cfg.Zones[zone]
	if !ok {
		return nil, fmt.Errorf("availability zone %q has no repository; configured zones: %v (add [zones.%s] to %s)",
			zone, s.cfg.ZoneNames(), zone, filepath.Join(s.cfg.Home, ConfigName))
	}
	bound, err := s.zoneBinding(zone)
	if err != nil {
		return nil, err
	}
	var st *chunkstore.Store
	if bound.RepositoryID == "" {
		st, err = s.initZoneRepository(ctx, zone, z.Repository)
	} else {
		st, err = s.openBoundRepository(ctx, zone, z.Repository, bound)
	}
	if err != nil {
		return nil, err
	}
	id := st.Config().ID
	if err := s.register(st, z.Repository, zone); err != nil {
		st.Close()
		return nil, err
	}
	if bound.RepositoryID == "" || bound.URL != z.Repository {
		b := index.ZoneBinding{Zone: zone, RepositoryID: id, URL: z.Repository}
		if err := s.update(func(tx *index.Tx) error { return tx.PutZone(b) }); err != nil {
			st.Close()
			return nil, err
		}
	}
	r, ok := s.repos[id]
	if ok {
		st.Close() // another zone opened it already
	} else {
		s.applyStoreOptions(st)
		r = &repository{store: st, url: z.Repository, id: id}
		s.cat.View(func(tx *index.Tx) error {
			reg, _, err := tx.Repository(id)
			r.compression = reg.CompressionLevel
			return err
		})
		s.repos[id] = r
	}
	s.zones[zone] = r
	return r, nil
}

func (s *Service) applyStoreOptions(st *chunkstore.Store) {
	if s.cfg.packSize > 0 {
		st.SetPackSize(s.cfg.packSize)
	}
	if s.cfg.SegmentChunks > 0 {
		st.SetSegmentChunks(s.cfg.SegmentChunks) // checked by LoadConfig
	}
	if s.cfg.lockOptions.Lease > 0 {
		st.SetLockOptions(s.cfg.lockOptions)
	}
}

// zoneBinding is the repository a zone had: the catalog's binding, or for
// a catalog older than bindings, the repository of the zone's backups.
func (s *Service) zoneBinding(zone string) (index.ZoneBinding, error) {
	var b index.ZoneBinding
	err := s.cat.View(func(tx *index.Tx) error {
		var found bool
		var err error
		if b, found, err = tx.Zone(zone); err != nil || found {
			return err
		}
		all, err := tx.Backups()
		for _, o := range all {
			if o.AvailabilityZone == zone && o.RepositoryID != "" {
				b = index.ZoneBinding{Zone: zone, RepositoryID: o.RepositoryID, URL: o.Container}
				break
			}
		}
		return err
	})
	return b, err
}

// initZoneRepository opens the repository at url for a zone that never
// had one, creating it when the location holds none. (repo-init will call
// this too.)
func (s *Service) initZoneRepository(ctx context.Context, zone, url string) (*chunkstore.Store, error) {
	be, err := repo.Open(ctx, url, true)
	if err != nil {
		return nil, fmt.Errorf("repository of zone %q: %w", zone, err)
	}
	st, err := chunkstore.OpenOrInit(ctx, be, s.cfg.ChunkSize)
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("repository %s: %w", url, err)
	}
	return st, nil
}

// openBoundRepository opens the repository a zone is bound to and checks
// it is that one.
func (s *Service) openBoundRepository(ctx context.Context, zone, url string, b index.ZoneBinding) (*chunkstore.Store, error) {
	conf := filepath.Join(s.cfg.Home, ConfigName)
	be, err := repo.Open(ctx, url, false)
	if err != nil {
		return nil, fmt.Errorf("zone %q uses repository %s at %s, which cannot be opened: %w; volback does not create a new empty repository for a zone that had one: mount the file system that holds it (an NFS export?), or fix the zone's URL in %s",
			zone, b.RepositoryID, url, err, conf)
	}
	st, err := chunkstore.Open(ctx, be)
	if err != nil {
		be.Close()
		if errors.Is(err, repo.ErrNotFound) {
			return nil, fmt.Errorf("zone %q uses repository %s, but %s holds no repository (no config object): is the file system that holds it mounted there? volback does not create a new empty repository for a zone that had one; mount it, or fix the zone's URL in %s",
				zone, b.RepositoryID, url, conf)
		}
		return nil, fmt.Errorf("repository %s of zone %q: %w", url, zone, err)
	}
	if got := st.Config().ID; got != b.RepositoryID {
		st.Close()
		return nil, fmt.Errorf("zone %q uses repository %s, but %s holds repository %s: the URL points at another repository (or this one was re-initialised); point zone %q back at repository %s in %s",
			zone, b.RepositoryID, url, got, zone, b.RepositoryID, conf)
	}
	return st, nil
}

// repoByID finds the repository with config id id, trying zone first.
// When the zone bound to that repository cannot open it, that error (the
// real cause) is returned.
func (s *Service) repoByID(ctx context.Context, id, zone string) (*repository, error) {
	if r := s.opened(id); r != nil {
		return r, s.unlock(ctx, r)
	}
	var reg index.Repository
	var found bool
	if err := s.cat.View(func(tx *index.Tx) (err error) { reg, found, err = tx.Repository(id); return err }); err != nil {
		return nil, err
	}
	if found && reg.Name != "" { // a container: it is opened by its registration
		return s.openRegistered(ctx, &reg)
	}
	zones := append([]string{zone}, s.cfg.ZoneNames()...)
	var causes []string
	for _, z := range zones {
		if _, ok := s.cfg.Zones[z]; !ok {
			continue
		}
		r, err := s.repoFor(ctx, z)
		if err == nil && r.id == id {
			return r, nil
		}
		if err != nil {
			if b, berr := s.zoneBinding(z); berr == nil && b.RepositoryID == id {
				return nil, err
			}
			causes = append(causes, err.Error())
		}
	}
	why := ""
	if len(causes) > 0 {
		why = " (" + strings.Join(causes, "; ") + ")"
	}
	return nil, fmt.Errorf("repository %s is not configured in any zone%s; add it to %s", id, why, filepath.Join(s.cfg.Home, ConfigName))
}

// lock takes the repository lock for purpose and brings the catalog's
// chunk index up to date with the repository's GC generation.
func (s *Service) lock(ctx context.Context, r *repository, exclusive bool, purpose string, wait time.Duration) (*chunkstore.Lock, error) {
	lk, err := r.store.Lock(ctx, chunkstore.LockRequest{Exclusive: exclusive, Purpose: purpose, Owner: s.cfg.Home, Wait: wait})
	if err != nil {
		return nil, err
	}
	if err := s.syncIndex(ctx, r); err != nil {
		lk.Release()
		return nil, err
	}
	return lk, nil
}

// recordsIn counts the backup records in the repository of zone without
// creating or binding anything (for hints); -1 when it cannot be read.
func (s *Service) recordsIn(ctx context.Context, zone string) int {
	s.mu.Lock()
	r, ok := s.zones[zone]
	s.mu.Unlock()
	st := (*chunkstore.Store)(nil)
	if ok {
		st = r.store
	} else {
		z, ok := s.cfg.Zones[zone]
		if !ok {
			return -1
		}
		be, err := repo.Open(ctx, z.Repository, false)
		if err != nil {
			return -1
		}
		if st, err = chunkstore.Open(ctx, be); err != nil {
			be.Close()
			return -1
		}
		defer st.Close()
	}
	n := 0
	if err := st.ListRecords(ctx, func(string) error { n++; return nil }); err != nil {
		return -1
	}
	return n
}

// EmptyCatalogNotice tells the user, when the catalog has no backups,
// which repositories hold backup records anyway: a lost catalog looks
// like an empty one.
func (s *Service) EmptyCatalogNotice(ctx context.Context, progress ProgressFunc) {
	if progress == nil {
		return // nobody to tell (a mount's listing)
	}
	var n int
	if err := s.cat.View(func(tx *index.Tx) error { all, err := tx.Backups(); n = len(all); return err }); err != nil || n > 0 {
		return
	}
	for _, z := range s.cfg.ZoneNames() {
		if k := s.recordsIn(ctx, z); k > 0 {
			progress.report(Progress{Notice: fmt.Sprintf("the catalog has no backups, but the repository of zone %s (%s) holds %d backup record(s): if the catalog was lost, run volback catalog-rebuild (or backup-import single backups); a second volback home on the same repository lists only its own backups",
				z, s.cfg.Zones[z].Repository, k)})
		}
	}
}
