package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/index"
)

// syncIndex brings the catalog's chunk index up to date when another
// catalog (another home on the same repository) moved or deleted packs
// since this one last looked: the repository's GC generation then differs
// from the one the catalog recorded. Call it holding the repository lock.
func (s *Service) syncIndex(ctx context.Context, r *repository) error {
	gen, err := r.store.Generation(ctx)
	if err != nil {
		return err
	}
	if s.indexGeneration(r) == gen {
		return nil
	}
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	if s.indexGeneration(r) == gen {
		return nil // another goroutine synced meanwhile
	}
	if _, err := s.reconcile(ctx, r); err != nil {
		return fmt.Errorf("bringing the chunk index of %s up to date after another catalog collected garbage: %w", r.url, err)
	}
	return s.setIndexGeneration(r, gen)
}

// indexGeneration is the GC generation the catalog's index reflects, or a
// value no generation has when it never synced.
func (s *Service) indexGeneration(r *repository) string {
	var st index.RepoState
	var found bool
	if err := s.cat.View(func(tx *index.Tx) (err error) { st, found, err = tx.RepoState(r.id); return err }); err != nil || !found {
		return "(never synced)"
	}
	return st.GCGeneration
}

func (s *Service) setIndexGeneration(r *repository, gen string) error {
	return s.update(func(tx *index.Tx) error {
		return tx.PutRepoState(index.RepoState{ID: r.id, URL: r.url, GCGeneration: gen})
	})
}

// reconcileReport says what reconcile changed.
type reconcileReport struct {
	relocated, dropped int
	lost               []chunkstore.ID
}

// reconcile fixes catalog entries whose pack is gone: a chunk found in the
// trailer of a pack the catalog does not know (a repack moved it) gets that
// location; one found nowhere is dropped when no backup references it and
// marked lost (its backups damaged) when one does.
func (s *Service) reconcile(ctx context.Context, r *repository) (reconcileReport, error) {
	var rep reconcileReport
	listed := map[chunkstore.ID]bool{}
	if err := r.store.ListPacks(ctx, func(p chunkstore.PackInfo) error { listed[p.ID] = true; return nil }, nil); err != nil {
		return rep, err
	}
	gone := map[chunkstore.ID]index.Chunk{}
	known := map[chunkstore.ID]bool{}
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(r.id, func(id chunkstore.ID, c index.Chunk) error {
			if c.Lost() {
				return nil
			}
			known[c.Pack] = true
			if !listed[c.Pack] {
				gone[id] = c
			}
			return nil
		})
	})
	if err != nil || len(gone) == 0 {
		return rep, err
	}
	// A moved chunk is looked for first in the packs the catalog knows
	// nothing of (a repack's output), then, while some are still missing,
	// in the packs it knows: another catalog's GC may have kept its own
	// copy of a chunk in a pack this catalog knows for other chunks, and
	// deleted this catalog's copy as stored elsewhere.
	found := map[chunkstore.ID]chunkstore.Location{}
	for _, pass := range []bool{false, true} {
		for p := range listed {
			if known[p] != pass || len(found) == len(gone) {
				continue
			}
			entries, err := r.store.ReadPackEntries(ctx, p)
			if err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				s.log.Printf("repository %s: pack %s: %v (ignored while looking for moved chunks)", r.url, p, err)
				continue
			}
			for _, e := range entries {
				if _, want := gone[e.ID]; want {
					found[e.ID] = e.Location
				}
			}
		}
	}
	ids := make([]chunkstore.ID, 0, len(gone))
	for id := range gone {
		ids = append(ids, id)
	}
	for start := 0; start < len(ids); start += index.MaxBatch {
		batch := ids[start:min(start+index.MaxBatch, len(ids))]
		var lost []chunkstore.ID
		var relocated, dropped int
		err := s.update(func(tx *index.Tx) error {
			lost, relocated, dropped = lost[:0], 0, 0
			for _, id := range batch {
				c, ok, err := tx.Chunk(r.id, id)
				if err != nil {
					return err
				}
				if !ok || c.Lost() || c.Pack != gone[id].Pack {
					continue // changed meanwhile
				}
				switch loc, moved := found[id]; {
				case moved:
					c.Location = loc
					relocated++
					err = tx.PutChunk(r.id, id, c)
				case c.Refs == 0:
					dropped++
					err = tx.DeleteChunk(r.id, id)
				default:
					c.MarkLost()
					lost = append(lost, id)
					err = tx.PutChunk(r.id, id, c)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return rep, err
		}
		rep.relocated += relocated
		rep.dropped += dropped
		rep.lost = append(rep.lost, lost...)
	}
	if len(rep.lost) > 0 {
		reason := fmt.Sprintf("%d chunk(s) are in no pack of the repository (first: %s)", len(rep.lost), rep.lost[0])
		if err := s.markDamaged(ctx, r, rep.lost, reason); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// chunkLost records that chunk id, expected at loc, is missing or corrupt:
// its entry becomes lost (references kept; the next backup that meets the
// chunk stores it again) and the backups that need it are marked damaged.
// An entry that moved meanwhile is left alone. It returns cause, completed.
func (s *Service) chunkLost(ctx context.Context, r *repository, id chunkstore.ID, loc chunkstore.Location, cause error) error {
	if !errors.Is(cause, repo.ErrNotFound) && !errors.Is(cause, chunkstore.ErrCorrupt) {
		return cause // not a verdict on the data (I/O error, cancellation)
	}
	marked := false
	err := s.update(func(tx *index.Tx) error {
		c, ok, err := tx.Chunk(r.id, id)
		if err != nil || !ok || c.Lost() || c.Location != loc {
			return err
		}
		if c.Refs == 0 {
			return tx.DeleteChunk(r.id, id) // nobody needs it: just no longer offer it
		}
		c.MarkLost()
		marked = true
		return tx.PutChunk(r.id, id, c)
	})
	if err != nil {
		return fmt.Errorf("%w (recording the chunk as lost failed: %v)", cause, err)
	}
	if marked {
		reason := fmt.Sprintf("chunk %s was found missing or corrupt: %v", id, cause)
		if err := s.markDamaged(context.WithoutCancel(ctx), r, []chunkstore.ID{id}, reason); err != nil {
			s.log.Printf("repository %s: marking the backups that need chunk %s damaged: %v", r.url, id, err)
		}
	}
	return fmt.Errorf("%w; the chunk is now recorded as lost and the backups that need it as damaged: run volback repo-repair", cause)
}

// markDamaged sets the damaged flag of every backup of r in the catalog
// whose manifest lists one of ids, and flags the backups still running
// to check their chunks (CheckLost).
func (s *Service) markDamaged(ctx context.Context, r *repository, ids []chunkstore.ID, reason string) error {
	want := make(map[chunkstore.ID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	var backups []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { backups, err = tx.Backups(); return err }); err != nil {
		return err
	}
	var hit []string
	for _, b := range backups {
		if b.RepositoryID != r.id || b.Damaged || b.ManifestDigest == "" {
			continue
		}
		m, err := s.loadManifest(ctx, r, b)
		found := false
		if err == nil {
			err = r.store.WalkRefs(ctx, b.ID, m, 0, func(_ int64, ids []chunkstore.ID) error {
				for _, id := range ids {
					if want[id] {
						found = true
						return chunkstore.ErrStopWalk
					}
				}
				return nil
			})
		}
		if err != nil || found {
			hit = append(hit, b.ID) // unreadable: damaged too
		}
	}
	return s.update(func(tx *index.Tx) error {
		// Backups still running have no manifest to search: they check
		// their chunks before they become available (finish).
		all, err := tx.Backups()
		if err != nil {
			return err
		}
		for _, b := range all {
			if b.RepositoryID == r.id && b.Status == index.StatusCreating && b.ManifestDigest == "" && !b.CheckLost {
				b.CheckLost, b.UpdatedAt = true, now()
				if err := tx.PutBackup(b); err != nil {
					return err
				}
			}
		}
		for _, id := range hit {
			b, err := tx.Backup(id)
			if errors.Is(err, index.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			b.Damaged, b.DamageReason, b.UpdatedAt = true, reason, now()
			if err := tx.PutBackup(b); err != nil {
				return err
			}
		}
		return nil
	})
}
