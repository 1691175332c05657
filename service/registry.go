package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/chunkstore/crypt"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/index"
)

// Repositories as first-class objects (docs/CLI.md, "Repositories"):
// repo-init creates one and registers it in the catalog under a name (Cinder's
// container) and a zone; a zone's first use registers the zone's repository
// too. The registration holds no key.

// DefaultEncryption is the cipher repo-init uses unless told otherwise
// (docs/BENCHMARKS.md has the measurements behind the choice).
const DefaultEncryption = crypt.AES256GCM

// RepoInitRequest is repo-init.
type RepoInitRequest struct {
	URL              string `json:"url"`
	Zone             string `json:"availability_zone,omitempty"`
	Name             string `json:"name,omitempty"`
	Encryption       string `json:"encryption,omitempty"` // "" = DefaultEncryption; "none"
	ChunkSize        string `json:"chunk_size,omitempty"`
	CompressionLevel *int   `json:"compression_level,omitempty"`
}

// RepositoryView is a repository as repo-list and repo-show print it.
type RepositoryView struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	URL              string `json:"url"`
	Zone             string `json:"availability_zone"`
	ZoneDefault      bool   `json:"zone_default"` // the zone's repository (backups without --container)
	Encryption       string `json:"encryption"`
	ChunkSize        int    `json:"chunk_size"`
	CompressionLevel int    `json:"compression_level"`
	// State: "unencrypted", "unlocked" (this owner holds the key in
	// memory), "locked" (needs its passphrase), or "unreachable: why".
	State     string    `json:"state"`
	Backups   int       `json:"backups"`
	CreatedAt time.Time `json:"created_at"`
}

// containerOf is what a backup's container field says for r: the name
// it is registered under, or its URL.
func (s *Service) containerOf(r *repository) string {
	var reg index.Repository
	s.cat.View(func(tx *index.Tx) (err error) { reg, _, err = tx.Repository(r.id); return err })
	return cmp.Or(reg.Name, r.url)
}

// register records a repository opened for a zone's first use (or found
// there) if the catalog does not know it yet.
func (s *Service) register(st *chunkstore.Store, url, zone string) error {
	return s.update(func(tx *index.Tx) error {
		if _, found, err := tx.Repository(st.Config().ID); err != nil || found {
			return err
		}
		cfg := st.Config()
		return tx.PutRepository(index.Repository{ID: cfg.ID, URL: url, Zone: zone, Encryption: cmp.Or(cfg.Encryption, "none"),
			ChunkSize: cfg.ChunkSize, CreatedAt: cfg.CreatedAt})
	})
}

// mergeZones adds the zones the catalog binds but volback.toml does not
// configure (made by repo-init), and lets a binding replace the implicit
// default zone's URL.
func (s *Service) mergeZones() error {
	var zones []*index.ZoneBinding
	if err := s.cat.View(func(tx *index.Tx) (err error) { zones, err = tx.Zones(); return err }); err != nil {
		return err
	}
	merged := maps.Clone(s.cfg.Zones)
	for _, z := range zones {
		if _, ok := merged[z.Zone]; (!ok || z.Zone == s.cfg.implicitZone) && z.URL != "" {
			merged[z.Zone] = Zone{Repository: z.URL}
		}
	}
	s.cfg.Zones = merged
	return nil
}

func sameURL(a, b string) bool { return strings.TrimRight(a, "/") == strings.TrimRight(b, "/") }

// InitRepository creates a repository at req.URL and registers it:
// as its zone's repository when the zone has none yet, else as another
// container of the zone. An encrypted one needs the passphrase (from
// --password-file or VOLBACK_PASSWORD). Every check runs before anything
// is written.
func (s *Service) InitRepository(ctx context.Context, req RepoInitRequest) (*RepositoryView, error) {
	zone := cmp.Or(req.Zone, s.cfg.DefaultZone)
	if strings.ContainsAny(zone, "/ ") {
		return nil, errorf(ErrUsage, "availability zone %q: a zone name has no '/' or spaces", zone)
	}
	if req.URL == "" || !strings.Contains(req.URL, "://") {
		return nil, errorf(ErrUsage, "repository URL %q: give file:///PATH or rados://POOL?...", req.URL)
	}
	if strings.Contains(req.Name, "://") || strings.Contains(req.Name, "/") {
		return nil, errorf(ErrUsage, "repository name %q: a name has no '/' (it must not look like a URL)", req.Name)
	}
	cipher := ""
	switch e := cmp.Or(req.Encryption, DefaultEncryption); e {
	case "none":
	default:
		c, err := crypt.ParseCipher(e)
		if err != nil {
			return nil, errorf(ErrUsage, "%v", err)
		}
		cipher = c
	}
	cs := s.cfg.ChunkSize
	if req.ChunkSize != "" {
		n, err := ParseSize(req.ChunkSize)
		if err == nil {
			err = chunkstore.CheckChunkSize(int(n))
		}
		if err != nil {
			return nil, errorf(ErrUsage, "--chunk-size %q: %v", req.ChunkSize, err)
		}
		cs = int(n)
	}
	if l := req.CompressionLevel; l != nil && (*l < 0 || *l > 22) {
		return nil, errorf(ErrUsage, "--compression %d: 0 (none) or a zstd level 1..22", *l)
	}
	password := s.password(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	var regs []*index.Repository
	var bound index.ZoneBinding
	var zoneBound bool
	err := s.cat.View(func(tx *index.Tx) (err error) {
		if regs, err = tx.Repositories(); err != nil {
			return err
		}
		bound, zoneBound, err = tx.Zone(zone)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, r := range regs {
		if req.Name != "" && r.Name == req.Name {
			return nil, errorf(ErrInvalidState, "a repository named %q exists already (%s, %s); choose another --name", req.Name, r.ID, r.URL)
		}
		if sameURL(r.URL, req.URL) {
			return nil, errorf(ErrInvalidState, "%s is repository %s already; use it (backup-create --container %s), or choose another location", req.URL, r.ID, cmp.Or(r.Name, r.URL))
		}
	}
	for z, c := range s.cfg.Zones {
		if sameURL(c.Repository, req.URL) && z != s.cfg.implicitZone {
			return nil, errorf(ErrInvalidState, "%s is zone %s's repository in %s; it is created on the zone's first use (or choose another location)", req.URL, z, filepath.Join(s.cfg.Home, ConfigName))
		}
	}
	// The zone's repository, unless the zone has one (bound, or configured
	// in volback.toml at another URL): then another container of the zone.
	conf, configured := s.cfg.Zones[zone]
	zoneDefault := !zoneBound && (!configured || zone == s.cfg.implicitZone || sameURL(conf.Repository, req.URL))
	if !zoneDefault && req.Name == "" {
		return nil, errorf(ErrUsage, "zone %s has a repository already (%s); give this one a --name: backup-create --container NAME writes to it", zone, cmp.Or(bound.URL, conf.Repository))
	}

	be, err := repo.Open(ctx, req.URL, true)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", req.URL, err)
	}
	st, err := s.initOrAdopt(ctx, be, req, cipher, cs, password)
	if err != nil {
		be.Close()
		return nil, err
	}
	cfg := st.Config()
	for _, r := range regs {
		if r.ID == cfg.ID {
			st.Close()
			return nil, errorf(ErrInvalidState, "%s holds repository %s, which is registered already at %s", req.URL, cfg.ID, r.URL)
		}
	}
	reg := index.Repository{ID: cfg.ID, Name: req.Name, URL: req.URL, Zone: zone, Encryption: cmp.Or(cfg.Encryption, "none"),
		ChunkSize: cfg.ChunkSize, CompressionLevel: req.CompressionLevel, CreatedAt: cfg.CreatedAt}
	err = s.update(func(tx *index.Tx) error {
		if zoneDefault {
			if err := tx.PutZone(index.ZoneBinding{Zone: zone, RepositoryID: cfg.ID, URL: req.URL}); err != nil {
				return err
			}
		}
		return tx.PutRepository(reg)
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("repository %s was created at %s, but registering it failed: %w; run repo-init again with another location, or remove it", cfg.ID, req.URL, err)
	}
	s.applyStoreOptions(st)
	r := &repository{store: st, url: req.URL, id: cfg.ID, compression: req.CompressionLevel}
	s.repos[cfg.ID] = r
	if zoneDefault {
		zones := maps.Clone(s.cfg.Zones)
		zones[zone] = Zone{Repository: req.URL}
		s.cfg.Zones = zones
		s.zones[zone] = r
	}
	s.event(ctx, "repository created", "repository", cfg.ID, "name", req.Name, "url", req.URL, "zone", zone,
		"encryption", reg.Encryption, "zone_default", zoneDefault)
	return s.view(ctx, &reg, r), nil
}

// initOrAdopt creates the repository, or, when the location holds one
// already (a catalog was lost, or another home made it), opens it for
// registration: its settings must not contradict the request, and an
// encrypted one must unlock with the passphrase. Nothing is written to an
// existing repository.
func (s *Service) initOrAdopt(ctx context.Context, be repo.Backend, req RepoInitRequest, cipher string, cs int, password []byte) (*chunkstore.Store, error) {
	st, err := chunkstore.Open(ctx, be)
	if errors.Is(err, repo.ErrNotFound) {
		if cipher != "" && len(password) == 0 {
			return nil, errorf(ErrUsage, "repo-init encrypts with %s: give the new repository's passphrase with --password-file FILE or VOLBACK_PASSWORD (never on the command line), or choose --encryption none", cipher)
		}
		return chunkstore.InitWith(ctx, be, chunkstore.InitOptions{ChunkSize: cs, Encryption: cipher, Password: password, KDF: s.cfg.kdf})
	}
	if err != nil {
		return nil, err
	}
	cfg := st.Config()
	if req.Encryption != "" && cmp.Or(cfg.Encryption, "none") != cmp.Or(cipher, "none") {
		return nil, errorf(ErrUsage, "%s holds repository %s already, encrypted with %s, not %s; leave out --encryption to register it as it is", req.URL, cfg.ID, cmp.Or(cfg.Encryption, "none"), cmp.Or(cipher, "none"))
	}
	if req.ChunkSize != "" && cfg.ChunkSize != cs {
		return nil, errorf(ErrUsage, "%s holds repository %s already, with chunk size %d, not %d; leave out --chunk-size to register it as it is", req.URL, cfg.ID, cfg.ChunkSize, cs)
	}
	if err := st.Unlock(ctx, password); err != nil {
		return nil, fmt.Errorf("registering the existing repository %s at %s: %w", cfg.ID, req.URL, err)
	}
	return st, nil
}

// view describes a registered repository; r is nil when it is not open.
func (s *Service) view(ctx context.Context, reg *index.Repository, r *repository) *RepositoryView {
	v := &RepositoryView{ID: reg.ID, Name: reg.Name, URL: reg.URL, Zone: reg.Zone, Encryption: reg.Encryption,
		ChunkSize: reg.ChunkSize, CompressionLevel: s.cfg.CompressionLevel, CreatedAt: reg.CreatedAt}
	if reg.CompressionLevel != nil {
		v.CompressionLevel = *reg.CompressionLevel
	}
	s.cat.View(func(tx *index.Tx) error {
		z, ok, err := tx.Zone(reg.Zone)
		v.ZoneDefault = ok && z.RepositoryID == reg.ID
		all, err2 := tx.Backups()
		for _, b := range all {
			if b.RepositoryID == reg.ID {
				v.Backups++
			}
		}
		return cmp.Or(err, err2)
	})
	switch {
	case r == nil:
		if err := probe(ctx, reg.URL); err != nil {
			v.State = "unreachable: " + err.Error()
		} else if reg.Encryption == "none" {
			v.State = "unencrypted"
		} else {
			v.State = "locked"
		}
	case !r.store.Encrypted():
		v.State = "unencrypted"
	case r.store.Unlocked():
		v.State = "unlocked"
	default:
		v.State = "locked"
	}
	return v
}

// opened is the open repository with id, if this process has it.
func (s *Service) opened(id string) *repository {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[id]
}

// ListRepositories lists the registered repositories (every zone's
// repository once used, and those made by repo-init).
func (s *Service) ListRepositories(ctx context.Context) ([]RepositoryView, error) {
	var regs []*index.Repository
	if err := s.cat.View(func(tx *index.Tx) (err error) { regs, err = tx.Repositories(); return err }); err != nil {
		return nil, err
	}
	out := []RepositoryView{}
	for _, reg := range regs {
		out = append(out, *s.view(ctx, reg, s.opened(reg.ID)))
	}
	return out, nil
}

// findRegistered finds a registered repository by name, URL, id or id
// prefix (of at least 4 characters).
func (s *Service) findRegistered(ref string) (*index.Repository, error) {
	var regs []*index.Repository
	if err := s.cat.View(func(tx *index.Tx) (err error) { regs, err = tx.Repositories(); return err }); err != nil {
		return nil, err
	}
	var byPrefix []*index.Repository
	for _, r := range regs {
		if r.Name == ref || r.ID == ref {
			return r, nil
		}
	}
	for _, r := range regs {
		if sameURL(r.URL, ref) {
			return r, nil
		}
		if len(ref) >= 4 && strings.HasPrefix(r.ID, ref) {
			byPrefix = append(byPrefix, r)
		}
	}
	if len(byPrefix) == 1 {
		return byPrefix[0], nil
	}
	names := []string{}
	for _, r := range regs {
		names = append(names, cmp.Or(r.Name, r.URL))
	}
	if len(byPrefix) > 1 {
		return nil, errorf(ErrUsage, "repository %q is ambiguous: %d repositories' ids start with it", ref, len(byPrefix))
	}
	return nil, errorf(ErrNotFound, "no repository is registered as %q (registered: %s); repo-list lists them, repo-init creates one", ref, strings.Join(names, ", "))
}

// ShowRepository describes one registered repository.
func (s *Service) ShowRepository(ctx context.Context, ref string) (*RepositoryView, error) {
	reg, err := s.findRegistered(ref)
	if err != nil {
		return nil, err
	}
	return s.view(ctx, reg, s.opened(reg.ID)), nil
}

// repoNamed opens (once) and unlocks the repository registered as ref.
func (s *Service) repoNamed(ctx context.Context, ref string) (*repository, *index.Repository, error) {
	reg, err := s.findRegistered(ref)
	if err != nil {
		return nil, nil, err
	}
	r, err := s.openRegistered(ctx, reg)
	return r, reg, err
}

// openRegistered opens a registered repository at its URL and checks it
// is that one; it never creates one.
func (s *Service) openRegistered(ctx context.Context, reg *index.Repository) (*repository, error) {
	s.mu.Lock()
	r, ok := s.repos[reg.ID]
	if !ok {
		be, err := repo.Open(ctx, reg.URL, false)
		if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("repository %s (%s) at %s cannot be opened: %w; volback never creates a new empty repository in its place: mount the file system that holds it", cmp.Or(reg.Name, reg.ID), reg.ID, reg.URL, err)
		}
		st, err := chunkstore.Open(ctx, be)
		if err == nil && st.Config().ID != reg.ID {
			st.Close()
			err = fmt.Errorf("it holds repository %s", st.Config().ID)
		}
		if err != nil {
			be.Close()
			s.mu.Unlock()
			if errors.Is(err, repo.ErrNotFound) {
				err = errors.New("no repository (no config object) is there")
			}
			return nil, fmt.Errorf("repository %s (%s) at %s: %v; is the file system that holds it mounted?", cmp.Or(reg.Name, reg.ID), reg.ID, reg.URL, err)
		}
		s.applyStoreOptions(st)
		r = &repository{store: st, url: reg.URL, id: reg.ID, compression: reg.CompressionLevel}
		s.repos[reg.ID] = r
	}
	s.mu.Unlock()
	if err := s.unlock(ctx, r); err != nil {
		return nil, err
	}
	return r, nil
}
