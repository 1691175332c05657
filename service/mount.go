package service

import (
	"context"
	"fmt"
	"log"
	"sync"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/fs"
	"github.com/volback/volback/index"
)

// ImageLocation is what a reader outside the owning process needs to read a
// backup straight from its repository: where the repository is, which
// manifest to expect, and where each of its chunks lives.
type ImageLocation struct {
	BackupID       string     `json:"backup_id"`
	Repository     string     `json:"repository"`
	RepositoryID   string     `json:"repository_id"`
	ManifestDigest string     `json:"manifest_digest"`
	Chunks         []ChunkRef `json:"chunks"`
}

// ChunkRef is one chunk's location.
type ChunkRef struct {
	ID        string `json:"id"`
	Pack      string `json:"pack"`
	Offset    uint32 `json:"offset"`
	Length    uint32 `json:"length"`
	RawLength uint32 `json:"raw_length"`
	Codec     uint8  `json:"codec"`
}

// readable resolves a backup that can be read (available, or being
// restored), its repository and its verified manifest.
func (s *Service) readable(ctx context.Context, ref string) (*index.Backup, *repository, *chunkstore.Manifest, error) {
	var b *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { b, err = findBackup(tx, caller(ctx), ref); return err }); err != nil {
		return nil, nil, nil, err
	}
	if b.Status != index.StatusAvailable && b.Status != index.StatusRestoring {
		return nil, nil, nil, fmt.Errorf("backup %s is %s; only available backups can be read", b.ID, b.Status)
	}
	r, err := s.repoByID(ctx, b.RepositoryID, b.AvailabilityZone)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := s.loadManifest(ctx, r, b)
	if err != nil {
		return nil, nil, nil, err
	}
	return b, r, m, nil
}

// LocateImage returns the locations of every chunk of an available backup.
func (s *Service) LocateImage(ctx context.Context, ref string) (*ImageLocation, error) {
	b, r, m, err := s.readable(ctx, ref)
	if err != nil {
		return nil, err
	}
	loc := &ImageLocation{BackupID: b.ID, Repository: r.url, RepositoryID: b.RepositoryID,
		ManifestDigest: b.ManifestDigest, Chunks: make([]ChunkRef, 0, len(m.IDs))}
	err = s.cat.View(func(tx *index.Tx) error {
		for _, id := range m.IDs {
			c, ok, err := tx.Chunk(b.RepositoryID, id)
			if err != nil {
				return err
			}
			if !ok || c.Lost() {
				return fmt.Errorf("backup %s: chunk %s is lost (not in the catalog, or found missing or corrupt); the backup is damaged: run volback repo-repair", b.ID, id)
			}
			loc.Chunks = append(loc.Chunks, ChunkRef{ID: id.String(), Pack: c.Pack.String(), Offset: c.Offset,
				Length: c.Length, RawLength: c.RawLength, Codec: uint8(c.Codec)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return loc, nil
}

// mountReadAhead is how far ahead of a sequential reader chunks are
// fetched: several of the kernel's 1 MiB requests, so decoding overlaps
// both the reader and the repository's I/O.
const mountReadAhead = 4 << 20

// MountSource serves `volback mount` through any Caller, so the mount works
// whether it owns the catalog or another volback process does. Chunk data is
// read straight from the repositories, through one shared cache.
type MountSource struct {
	c     Caller
	cache *chunkstore.Cache
	// Password unlocks encrypted repositories this process reads itself
	// (when another process owns the catalog); never sent anywhere.
	Password []byte
	// Log, when set, is told about damaged backups as they are opened.
	Log *log.Logger

	damaged sync.Map // backup id -> damage reason, from the last listing

	mu     sync.Mutex
	stores map[string]*chunkstore.Store
}

// NewMountSource makes a source whose chunk cache holds cacheBytes.
func NewMountSource(c Caller, cacheBytes int64) *MountSource {
	return &MountSource{c: c, cache: chunkstore.NewCache(cacheBytes), stores: map[string]*chunkstore.Store{}}
}

// Backups lists the available backups.
func (ms *MountSource) Backups(ctx context.Context) ([]fs.Entry, error) {
	var list []BackupView
	if err := ms.c.Call(ctx, "backup-list", Ref{AllProjects: true}, &list, nil); err != nil { // an admin mounts every project's backups
		return nil, err
	}
	out := make([]fs.Entry, 0, len(list))
	for _, b := range list {
		if b.Damaged && b.DamageReason != nil {
			ms.damaged.Store(b.ID, *b.DamageReason)
		} else {
			ms.damaged.Delete(b.ID)
		}
		if b.Status == index.StatusAvailable || b.Status == index.StatusRestoring {
			out = append(out, fs.Entry{ID: b.ID, Name: b.Name, VolumeID: b.VolumeID, VolumeName: b.VolumeName, CreatedAt: b.CreatedAt, Size: b.SizeBytes})
		}
	}
	return out, nil
}

// OpenImage opens one backup for reading. A mount holds no repository
// lock, so that it never keeps repo-gc waiting: when a chunk is not where
// it was (a repack moved it), the image looks it up again and retries.
// Reads never return wrong bytes: every chunk is verified.
func (ms *MountSource) OpenImage(ctx context.Context, id string) (fs.Image, error) {
	if why, ok := ms.damaged.Load(id); ok && ms.Log != nil {
		ms.Log.Printf("backup %s is damaged: %s; reads of the damaged ranges fail with EIO", id, why)
	}
	if s := localService(ms.c); s != nil {
		return ms.openLocal(ctx, s, id)
	}
	var loc ImageLocation
	if err := ms.c.Call(ctx, "backup-locate", Ref{Ref: id}, &loc, nil); err != nil {
		return nil, err
	}
	st, err := ms.store(ctx, loc.Repository, loc.RepositoryID)
	if err != nil {
		return nil, err
	}
	m, digest, err := st.LoadManifest(ctx, loc.BackupID)
	if err != nil {
		return nil, err
	}
	if digest.String() != loc.ManifestDigest {
		return nil, fmt.Errorf("manifest of backup %s does not match the catalog's digest: %w", loc.BackupID, chunkstore.ErrCorrupt)
	}
	rl := &remoteLocator{c: ms.c, backup: loc.BackupID}
	if err := rl.set(&loc); err != nil {
		return nil, err
	}
	ra := max(16, mountReadAhead/max(m.ChunkSize, 1))
	return st.OpenImage(m, rl, chunkstore.ImageOptions{Cache: ms.cache, ReadAhead: ra, Name: loc.BackupID}), nil
}

// openLocal opens an image when this process owns the catalog: chunks are
// located through the catalog as they are read, so opening costs the same
// whatever the image size.
func (ms *MountSource) openLocal(ctx context.Context, s *Service, ref string) (fs.Image, error) {
	b, r, m, err := s.readable(ctx, ref)
	if err != nil {
		return nil, err
	}
	ra := max(16, mountReadAhead/max(m.ChunkSize, 1))
	return r.store.OpenImage(m, &catalogLocator{s: s, r: r}, chunkstore.ImageOptions{Cache: ms.cache, ReadAhead: ra, Name: b.ID}), nil
}

func (ms *MountSource) store(ctx context.Context, url, id string) (*chunkstore.Store, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if st, ok := ms.stores[url]; ok {
		return st, nil
	}
	be, err := repo.Open(ctx, url, false)
	if err != nil {
		return nil, err
	}
	st, err := chunkstore.Open(ctx, be)
	if err != nil {
		be.Close()
		return nil, err
	}
	if st.Config().ID != id {
		be.Close()
		return nil, fmt.Errorf("repository %s has id %s, the catalog expects %s", url, st.Config().ID, id)
	}
	if err := st.Unlock(ctx, ms.Password); err != nil {
		be.Close()
		return nil, err
	}
	ms.stores[url] = st
	return st, nil
}

// CacheStats is how many chunk reads the mount's cache answered (hits) and
// how many fetched from a repository (misses), for metrics.
func (ms *MountSource) CacheStats() (hits, misses uint64) { return ms.cache.Stats() }

// Close closes the repositories the source opened.
func (ms *MountSource) Close() {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, st := range ms.stores {
		st.Close()
	}
}

// remoteLocator locates the chunks of one backup from the locations the
// catalog owner gave; when a chunk is not where they said (a GC moved it
// since), it asks the owner again, once per miss.
type remoteLocator struct {
	c      Caller
	backup string

	mu   sync.Mutex
	locs map[chunkstore.ID]chunkstore.Location
}

func (l *remoteLocator) set(loc *ImageLocation) error {
	locs := make(map[chunkstore.ID]chunkstore.Location, len(loc.Chunks))
	for _, c := range loc.Chunks {
		cid, err1 := chunkstore.ParseID(c.ID)
		pack, err2 := chunkstore.ParseID(c.Pack)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("backup %s: bad chunk location from the catalog owner", loc.BackupID)
		}
		locs[cid] = chunkstore.Location{Pack: pack, Offset: c.Offset, Length: c.Length, RawLength: c.RawLength, Codec: chunkstore.Codec(c.Codec)}
	}
	l.mu.Lock()
	l.locs = locs
	l.mu.Unlock()
	return nil
}

func (l *remoteLocator) Locate(_ context.Context, id chunkstore.ID) (chunkstore.Location, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	loc, ok := l.locs[id]
	if !ok {
		return loc, fmt.Errorf("chunk %s: %w", id, repo.ErrNotFound)
	}
	return loc, nil
}

// Relocate asks the owner for fresh locations (unless another reader did
// meanwhile) and returns the chunk's new one.
func (l *remoteLocator) Relocate(ctx context.Context, id chunkstore.ID, old chunkstore.Location, cause error) (chunkstore.Location, error) {
	if loc, err := l.Locate(ctx, id); err == nil && loc != old {
		return loc, nil
	}
	var loc ImageLocation
	if err := l.c.Call(ctx, "backup-locate", Ref{Ref: l.backup}, &loc, nil); err != nil {
		return chunkstore.Location{}, err
	}
	if err := l.set(&loc); err != nil {
		return chunkstore.Location{}, err
	}
	nloc, err := l.Locate(ctx, id)
	if err == nil && nloc == old {
		return nloc, fmt.Errorf("the catalog owner still locates chunk %s in pack %s: %w", id, old.Pack, cause)
	}
	return nloc, err
}
