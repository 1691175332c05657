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
	"github.com/volback/volback/pipeline"
)

// ImageLocation is what a reader outside the owning process needs to read a
// backup straight from its repository: where the repository is, which
// manifest to expect, and where the chunks of one manifest segment live
// (a 1 TiB image is a thousand calls of a few hundred KiB each as a mount
// reads it, never one answer the size of the volume).
type ImageLocation struct {
	BackupID       string     `json:"backup_id"`
	Repository     string     `json:"repository"`
	RepositoryID   string     `json:"repository_id"`
	ManifestDigest string     `json:"manifest_digest"`
	Slot           *int       `json:"slot,omitempty"`
	Chunks         []ChunkRef `json:"chunks"` // the distinct chunks of the slot's segment
}

// LocateRequest is backup-locate: with Slot, the chunks of that slot's
// manifest segment; without, only where the backup is.
type LocateRequest struct {
	Ref  string `json:"ref"`
	Slot *int   `json:"slot,omitempty"`
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
// restored), its repository and its verified manifest head.
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

// LocateImage says where an available backup is and, with a slot, where
// each chunk of that slot's manifest segment is.
func (s *Service) LocateImage(ctx context.Context, req LocateRequest) (*ImageLocation, error) {
	b, r, m, err := s.readable(ctx, req.Ref)
	if err != nil {
		return nil, err
	}
	loc := &ImageLocation{BackupID: b.ID, Repository: r.url, RepositoryID: b.RepositoryID,
		ManifestDigest: b.ManifestDigest, Slot: req.Slot, Chunks: []ChunkRef{}}
	if req.Slot == nil {
		return loc, nil
	}
	k, ok := m.Find(*req.Slot)
	if !ok {
		return loc, nil // all zeros
	}
	g, err := r.store.LoadSegment(ctx, b.ID, m, k)
	if err != nil {
		return nil, err
	}
	err = s.cat.View(func(tx *index.Tx) error {
		for _, id := range g.IDs {
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

// mountLocatedBytes bounds the located manifest segments a mount keeps for
// all its images (a dense GiB's is ~1.3 MiB): enough for a few readers'
// current and next GiB, so re-opening an image (one dd per piece) does not
// locate its GiB again, and small against the mount's heap limit.
const mountLocatedBytes = 8 << 20

// MountSource serves `volback mount` through any Caller, so the mount works
// whether it owns the catalog or another volback process does. Chunk data is
// read straight from the repositories, through one shared cache.
type MountSource struct {
	c     Caller
	cache *pipeline.Cache
	segs  *pipeline.SegmentCache // located segments, shared by the images
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
	return &MountSource{c: c, cache: pipeline.NewCache(cacheBytes), segs: pipeline.NewSegmentCache(mountLocatedBytes),
		stores: map[string]*chunkstore.Store{}}
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
	if err := ms.c.Call(ctx, "backup-locate", LocateRequest{Ref: id}, &loc, nil); err != nil {
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
	rl := &remoteLocator{c: ms.c, backup: loc.BackupID, slots: map[int]map[chunkstore.ID]chunkstore.Location{}}
	ra := max(16, mountReadAhead/max(m.ChunkSize, 1))
	return pipeline.OpenImage(st, loc.BackupID, m, rl, pipeline.ImageOptions{Cache: ms.cache, ReadAhead: ra, Located: ms.segs}), nil
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
	return pipeline.OpenImage(r.store, b.ID, m, &catalogLocator{s: s, r: r}, pipeline.ImageOptions{Cache: ms.cache, ReadAhead: ra, Located: ms.segs}), nil
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
// catalog owner gives for each manifest segment as the image loads it,
// keeping those of the last few segments. When a chunk is not where they
// said (a GC moved it since), the image drops the segment and loads it
// again, which asks the owner anew; it needs no Relocate of its own.
type remoteLocator struct {
	c      Caller
	backup string

	mu    sync.Mutex
	slots map[int]map[chunkstore.ID]chunkstore.Location
	order []int // slots, oldest first
}

// remoteSlots is how many segments' locations a remote image keeps (as
// many as the image keeps segments, and a few more).
const remoteSlots = 12

// LocateSegment asks the owner where the segment's chunks are.
func (l *remoteLocator) LocateSegment(ctx context.Context, g *chunkstore.Segment) ([]chunkstore.Location, error) {
	if err := l.fetch(ctx, g.Slot); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.slots[g.Slot]
	locs := make([]chunkstore.Location, len(g.IDs))
	for k, id := range g.IDs {
		locs[k] = m[id] // a chunk the owner did not locate reads as missing
	}
	return locs, nil
}

func (l *remoteLocator) fetch(ctx context.Context, slot int) error {
	var loc ImageLocation
	if err := l.c.Call(ctx, "backup-locate", LocateRequest{Ref: l.backup, Slot: &slot}, &loc, nil); err != nil {
		return err
	}
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
	defer l.mu.Unlock()
	if _, ok := l.slots[slot]; !ok {
		l.order = append(l.order, slot)
	}
	l.slots[slot] = locs
	for len(l.order) > remoteSlots {
		delete(l.slots, l.order[0])
		l.order = l.order[1:]
	}
	return nil
}

// find returns id's location, from the latest segment that has it.
func (l *remoteLocator) find(id chunkstore.ID) (chunkstore.Location, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.order) - 1; i >= 0; i-- {
		if loc, ok := l.slots[l.order[i]][id]; ok {
			return loc, true
		}
	}
	return chunkstore.Location{}, false
}

func (l *remoteLocator) Locate(_ context.Context, id chunkstore.ID) (chunkstore.Location, error) {
	loc, ok := l.find(id)
	if !ok {
		return loc, fmt.Errorf("chunk %s: %w", id, repo.ErrNotFound)
	}
	return loc, nil
}
