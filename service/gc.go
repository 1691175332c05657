package service

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/index"
)

// GCReport says what a garbage collection removed.
type GCReport struct {
	Repository     string `json:"repository"`
	PacksDeleted   int    `json:"packs_deleted"`
	PacksRepacked  int    `json:"packs_repacked"`
	OrphansDeleted int    `json:"orphan_packs_deleted"`
	ChunksDropped  int    `json:"chunks_dropped"`
	BytesFreed     int64  `json:"bytes_freed"`
	Skipped        string `json:"skipped,omitempty"`
}

// repackBelow is the live share (by bytes) under which repo-gc rewrites a pack.
const repackBelow = 0.5

type packUse struct {
	live, dead           int
	liveBytes, deadBytes int64
}

// GC removes packs no backup uses, packs no catalog entry names (left by
// failed backups), and rewrites packs that are mostly dead.
func (s *Service) GC(ctx context.Context, zone string) ([]GCReport, error) {
	zones := s.cfg.ZoneNames()
	if zone != "" {
		zones = []string{zone}
	}
	var out []GCReport
	for _, z := range zones {
		r, err := s.repoFor(ctx, z)
		if err != nil {
			return out, err
		}
		rep, err := s.sweep(ctx, r, true)
		if err != nil {
			return out, err
		}
		out = append(out, rep)
	}
	return out, nil
}

// sweep deletes dead packs; full also deletes orphans and repacks. Without
// full it gives up at once when a backup is running (the next delete or
// repo-gc will do it), so deletes never wait for backups.
func (s *Service) sweep(ctx context.Context, r *repository, full bool) (GCReport, error) {
	rep := GCReport{Repository: r.url}
	if full {
		r.gc.Lock()
	} else if !r.gc.TryLock() {
		rep.Skipped = "a backup is running"
		return rep, nil
	}
	defer r.gc.Unlock()
	repoID := r.store.Config().ID
	if unknown, err := s.unknownRecord(ctx, r); err != nil {
		return rep, err
	} else if unknown != "" {
		// Its chunks are live but the catalog does not count them: removing
		// "dead" packs now could destroy that backup's data.
		err := fmt.Errorf("repository %s holds backup %s that the catalog does not know; import it (backup-import) or run catalog-rebuild before collecting garbage", r.url, unknown)
		if full {
			return rep, err
		}
		rep.Skipped = err.Error()
		return rep, nil
	}
	use := map[chunkstore.ID]*packUse{}
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(repoID, func(_ chunkstore.ID, c index.Chunk) error {
			u := use[c.Pack]
			if u == nil {
				u = &packUse{}
				use[c.Pack] = u
			}
			if c.Refs > 0 {
				u.live++
				u.liveBytes += int64(c.Length)
			} else {
				u.dead++
				u.deadBytes += int64(c.Length)
			}
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	dead := map[chunkstore.ID]bool{}
	repack := map[chunkstore.ID]bool{}
	for p, u := range use {
		switch {
		case u.live == 0:
			dead[p] = true
		case full && float64(u.liveBytes) < repackBelow*float64(u.liveBytes+u.deadBytes):
			repack[p] = true
		}
	}
	if len(repack) > 0 {
		if err := s.repack(ctx, r, repack); err != nil {
			return rep, err
		}
		rep.PacksRepacked = len(repack)
		for p := range repack {
			dead[p] = true // every live chunk has moved; what is left is dead
		}
	}
	if len(dead) > 0 {
		n, err := s.dropChunks(repoID, func(c index.Chunk) bool { return dead[c.Pack] })
		if err != nil {
			return rep, err
		}
		rep.ChunksDropped = n
		for p := range dead {
			if err := s.deletePack(ctx, r, p, &rep); err != nil {
				return rep, err
			}
			if !repack[p] {
				rep.PacksDeleted++
			}
		}
	}
	if full {
		err := r.store.Backend().List(ctx, "packs/", func(info repo.Info) error {
			id, err := chunkstore.ParseID(strings.TrimPrefix(info.Name, "packs/"))
			if err != nil || use[id] != nil {
				return nil
			}
			rep.OrphansDeleted++
			rep.BytesFreed += info.Size
			return r.store.Backend().Delete(ctx, info.Name)
		})
		if err != nil {
			return rep, fmt.Errorf("removing orphan packs of %s: %w", r.url, err)
		}
	}
	return rep, nil
}

func (s *Service) deletePack(ctx context.Context, r *repository, p chunkstore.ID, rep *GCReport) error {
	be := r.store.Backend()
	name := chunkstore.PackName(p)
	if info, err := be.Stat(ctx, name); err == nil {
		rep.BytesFreed += info.Size
	}
	if err := be.Delete(ctx, name); err != nil && !errors.Is(err, repoNotFound) {
		return fmt.Errorf("deleting pack %s: %w", name, err)
	}
	return nil
}

// dropChunks deletes, in batches, the catalog entries whose chunk matches.
// Entries go before their pack, so no backup can dedup against a chunk
// whose pack is gone.
func (s *Service) dropChunks(repoID string, match func(index.Chunk) bool) (int, error) {
	var ids []chunkstore.ID
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(repoID, func(id chunkstore.ID, c index.Chunk) error {
			if match(c) {
				ids = append(ids, id)
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	for start := 0; start < len(ids); start += index.MaxBatch {
		batch := ids[start:min(start+index.MaxBatch, len(ids))]
		err := s.update(func(tx *index.Tx) error {
			for _, id := range batch {
				if err := tx.DeleteChunk(repoID, id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// repack copies the live chunks of the given packs into new packs and points
// the catalog at the copies before anything old is deleted.
func (s *Service) repack(ctx context.Context, r *repository, packs map[chunkstore.ID]bool) error {
	repoID := r.store.Config().ID
	type live struct {
		id chunkstore.ID
		c  index.Chunk
	}
	var move []live
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(repoID, func(id chunkstore.ID, c index.Chunk) error {
			if packs[c.Pack] && c.Refs > 0 {
				move = append(move, live{id, c})
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	p := r.store.NewPacker(ctx, chunkstore.Compression{Level: s.cfg.CompressionLevel}, 2)
	var buf []byte
	for _, l := range move {
		data, err := r.store.ReadChunk(ctx, l.id, l.c.Location, buf)
		if err != nil {
			p.Abort()
			return fmt.Errorf("repacking chunk %s: %w", l.id, err)
		}
		buf = data
		if _, err := p.Add(l.id, data); err != nil {
			p.Abort()
			return err
		}
	}
	entries, err := p.Close()
	if err != nil {
		return err
	}
	for start := 0; start < len(entries); start += index.MaxBatch {
		batch := entries[start:min(start+index.MaxBatch, len(entries))]
		err := s.update(func(tx *index.Tx) error {
			for _, e := range batch {
				c, ok, err := tx.Chunk(repoID, e.ID)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				c.Location = e.Location
				if err := tx.PutChunk(repoID, e.ID, c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// unknownRecord returns the id of a backup record in the repository that
// the catalog has no backup for ("" when there is none).
func (s *Service) unknownRecord(ctx context.Context, r *repository) (string, error) {
	known := map[string]bool{}
	err := s.cat.View(func(tx *index.Tx) error {
		bs, err := tx.Backups()
		for _, b := range bs {
			known[b.ID] = true
		}
		return err
	})
	if err != nil {
		return "", err
	}
	unknown := ""
	err = r.store.Backend().List(ctx, "backups/", func(info repo.Info) error {
		if id := strings.TrimPrefix(info.Name, "backups/"); !known[id] && unknown == "" {
			unknown = id
		}
		return nil
	})
	return unknown, err
}
