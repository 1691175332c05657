package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
	"github.com/volback/volback/service/failpoint"
)

// References. A backup holds one reference per element of its manifest's
// reference list (each segment's ID table, in slot order; docs/FORMAT.md),
// or, when it has a RefsBase, of its list relative to that base (the IDs
// not in the base's table for the same slot): an incremental that changed
// 1% then counts ~1% of its chunks, the base's counts covering the rest.
// The catalog counts them in batches that each commit the backup's
// RefsApplied (a prefix of the list), and releases them in batches that
// each commit RefsReleased (a prefix of that prefix), so a crash leaves
// exactly known ranges. The list is read segment by segment: memory is
// one segment (two for a relative list: the base's of the same slot)
// whatever the volume.

// walkRefs walks b's reference list in its mode from position from (m
// is b's head, nil for the segments stored without one). A relative list
// needs its base's manifest: the base cannot be deleted while b counts
// against it (deleteBackup), so a walk that does not find it reports a
// broken catalog.
func (s *Service) walkRefs(ctx context.Context, r *repository, b *index.Backup, m *chunkstore.Manifest, from int64, fn func(pos int64, ids []chunkstore.ID) error) error {
	if b.RefsBase == "" {
		return r.store.WalkRefs(ctx, b.ID, m, from, fn)
	}
	var base *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { base, err = tx.Backup(b.RefsBase); return err }); err != nil {
		return fmt.Errorf("backup %s counts its references against backup %s: %w", b.ID, b.RefsBase, err)
	}
	bm, err := s.loadManifest(ctx, r, base)
	if err != nil {
		return fmt.Errorf("backup %s counts its references against backup %s: %w", b.ID, b.RefsBase, err)
	}
	return r.store.WalkRelRefs(ctx, b.ID, m, base.ID, bm, from, fn)
}

// countRefs counts one reference to each of ids, the positions
// [pos, pos+len(ids)) of b's reference list, MaxBatch per transaction.
// A part already counted (pos below RefsApplied: a resumed import) is
// skipped. A chunk without an entry (or with a lost one) takes its
// location from locate (an import's staged locations); with no location
// the chunk vanished and counting stops. seen, when set, is told each
// counted chunk's pack.
func (s *Service) countRefs(r *repository, b *index.Backup, pos int64, ids []chunkstore.ID,
	locate func(*index.Tx, chunkstore.ID) (chunkstore.Location, bool, error), seen func(pack chunkstore.ID)) error {
	if skip := int64(b.RefsApplied) - pos; skip > 0 {
		if skip >= int64(len(ids)) {
			return nil
		}
		ids, pos = ids[skip:], int64(b.RefsApplied)
	}
	if pos != int64(b.RefsApplied) {
		return fmt.Errorf("backup %s: counting references from %d, but %d are counted (a bug: report it)", b.ID, pos, b.RefsApplied)
	}
	repoID := r.id
	for start := 0; start < len(ids); start += index.MaxBatch {
		batch := ids[start:min(start+index.MaxBatch, len(ids))]
		var packs []chunkstore.ID
		err := s.update(func(tx *index.Tx) error {
			packs = packs[:0]
			for _, id := range batch {
				c, ok, err := tx.Chunk(repoID, id)
				if err != nil {
					return err
				}
				if !ok || c.Lost() {
					var loc chunkstore.Location
					var found bool
					if locate != nil {
						if loc, found, err = locate(tx, id); err != nil {
							return err
						}
					}
					if !found {
						return fmt.Errorf("chunk %s vanished from the catalog during backup %s (found missing or corrupt meanwhile); run the backup again", id, b.ID)
					}
					c.Location = loc // a lost entry keeps its references: its backups heal
				}
				c.Refs++
				if err := tx.PutChunk(repoID, id, c); err != nil {
					return err
				}
				packs = append(packs, c.Pack)
			}
			nb := *b
			nb.RefsApplied, nb.UpdatedAt = b.RefsApplied+len(batch), now()
			return tx.PutBackup(&nb)
		})
		if err != nil {
			return fmt.Errorf("counting chunk references of backup %s: %w", b.ID, err)
		}
		b.RefsApplied += len(batch)
		failpoint.Hit("backup.refs-batch")
		if seen != nil {
			for _, p := range packs {
				seen(p)
			}
		}
	}
	return nil
}

// releaseRefs releases b's counted references, [RefsReleased, RefsApplied)
// of its reference list, MaxBatch per transaction; the last batch sets
// both back to zero. m is the manifest head, or nil to read the segments
// stored without one. dropUnused deletes entries that fall to zero
// (imports: after a lost catalog such entries could be the only ones
// naming packs other, not yet imported, backups need); lost entries that
// fall to zero always go.
func (s *Service) releaseRefs(ctx context.Context, r *repository, b *index.Backup, m *chunkstore.Manifest, dropUnused bool) error {
	repoID := r.id
	release := func(ids []chunkstore.ID) error {
		err := s.update(func(tx *index.Tx) error {
			for _, id := range ids {
				c, ok, err := tx.Chunk(repoID, id)
				if err != nil {
					return err
				}
				if !ok || c.Refs == 0 {
					return fmt.Errorf("chunk %s of backup %s has no reference to release; the catalog is inconsistent: run volback repo-repair", id, b.ID)
				}
				if c.Refs--; c.Refs == 0 && (dropUnused || c.Lost()) {
					err = tx.DeleteChunk(repoID, id)
				} else {
					err = tx.PutChunk(repoID, id, c)
				}
				if err != nil {
					return err
				}
			}
			nb := *b
			nb.RefsReleased, nb.UpdatedAt = b.RefsReleased+len(ids), now()
			if nb.RefsReleased >= nb.RefsApplied {
				nb.RefsApplied, nb.RefsReleased = 0, 0
			}
			return tx.PutBackup(&nb)
		})
		if err != nil {
			return fmt.Errorf("releasing chunk references of backup %s: %w", b.ID, err)
		}
		if b.RefsReleased += len(ids); b.RefsReleased >= b.RefsApplied {
			b.RefsApplied, b.RefsReleased = 0, 0
		}
		failpoint.Hit("refs.release-batch")
		return nil
	}
	if b.RefsApplied == 0 {
		return nil
	}
	if b.RefsReleased >= b.RefsApplied {
		return release(nil)
	}
	err := s.walkRefs(ctx, r, b, m, int64(b.RefsReleased), func(pos int64, ids []chunkstore.ID) error {
		if pos != int64(b.RefsReleased) {
			return fmt.Errorf("backup %s: releasing references from %d, but %d are released (a bug: report it)", b.ID, pos, b.RefsReleased)
		}
		for len(ids) > 0 && b.RefsApplied > 0 {
			n := min(len(ids), index.MaxBatch, b.RefsApplied-b.RefsReleased)
			if err := release(ids[:n]); err != nil {
				return err
			}
			ids = ids[n:]
		}
		if b.RefsApplied == 0 {
			return chunkstore.ErrStopWalk
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("releasing the references of backup %s: %w", b.ID, err)
	}
	if b.RefsApplied > 0 {
		return fmt.Errorf("backup %s counts %d references but its manifest lists only %d; the catalog is inconsistent: run volback repo-repair", b.ID, b.RefsApplied, b.RefsReleased)
	}
	return nil
}

// backupCatalog is the catalog as one backup's pipeline sees it.
type backupCatalog struct {
	s        *Service
	r        *repository
	b        *index.Backup
	verified *packSet     // packs known to exist: written by this backup, or stat-ed
	healed   atomic.Int64 // lost chunks stored again: their backups may be whole again
	snaps    *index.Snapshots
}

// backupCatalog is the catalog as backup b sees it. Close it when the
// backup's pipeline has ended.
func (s *Service) backupCatalog(r *repository, b *index.Backup) *backupCatalog {
	return &backupCatalog{s: s, r: r, b: b, verified: newPackSet(verifiedPacks), snaps: s.cat.Snapshots(storedRefresh)}
}

func (c *backupCatalog) Close() { c.snaps.Close() }

// storedRefresh is how often Stored's snapshot of the catalog is renewed.
var storedRefresh = 10 * time.Millisecond

// verifiedPacks bounds the packs a backup remembers as existing; one it
// forgot is stat-ed again, which costs a round trip, not correctness.
const verifiedPacks = 4096

// Stored: a chunk with an entry that is not lost is not stored again (a
// lost one is, and its new location heals its backups). It reads a
// snapshot at most a few milliseconds old, so the hashers never wait for
// a commit: a chunk committed meanwhile (by another backup, or by this
// one's packer once it no longer lists it as pending) is stored once
// more, and CommitPack keeps the first location. A "stored" that has
// since been released is caught where it matters: countRefs refuses a
// chunk without an entry.
func (c *backupCatalog) Stored(_ context.Context, id chunkstore.ID) (bool, error) {
	var e index.Chunk
	var found bool
	err := c.snaps.View(func(tx *index.Tx) (err error) { e, found, err = tx.Chunk(c.r.id, id); return err })
	return found && !e.Lost(), err
}

// CommitPack enters a durable pack's chunks into the chunk index with no
// references yet (the backup's segments count them). A chunk already
// stored elsewhere keeps that location; a lost one takes the new one. A
// crash now leaves entries no backup references: their pack is judged by
// the sweep of the failed backup (or by repo-gc) like any dead pack.
func (c *backupCatalog) CommitPack(_ context.Context, pack chunkstore.ID, entries []chunkstore.PackEntry) error {
	for start := 0; start < len(entries); start += index.MaxBatch {
		batch := entries[start:min(start+index.MaxBatch, len(entries))]
		err := c.s.update(func(tx *index.Tx) error {
			for _, e := range batch {
				cur, ok, err := tx.Chunk(c.r.id, e.ID)
				if err != nil {
					return err
				}
				if ok && !cur.Lost() {
					continue
				}
				if ok {
					c.healed.Add(1)
				}
				cur.Location = e.Location
				if err := tx.PutChunk(c.r.id, e.ID, cur); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	c.verified.add(pack)
	failpoint.Hit("backup.pack-committed")
	return nil
}

// CountRefs counts a segment's references, then checks that every pack
// they are in still exists, so a backup never becomes available on top of
// a lost chunk.
func (c *backupCatalog) CountRefs(ctx context.Context, pos int64, ids []chunkstore.ID) error {
	var check []chunkstore.ID
	err := c.s.countRefs(c.r, c.b, pos, ids, nil, func(p chunkstore.ID) {
		if !c.verified.has(p) {
			c.verified.add(p)
			check = append(check, p)
		}
	})
	if err != nil {
		return err
	}
	var missing []chunkstore.ID
	for _, p := range check {
		if _, err := c.r.store.StatPack(ctx, p); errors.Is(err, repoNotFound) {
			missing = append(missing, p)
		} else if err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return c.s.missingPacks(ctx, c.r, c.b, missing)
	}
	return nil
}

// missingPacks handles packs a backup found missing: entries in them are
// dropped (or marked lost when referenced, their backups damaged) and the
// backup fails; the next one stores those chunks again.
func (s *Service) missingPacks(ctx context.Context, r *repository, b *index.Backup, missing []chunkstore.ID) error {
	gone := map[chunkstore.ID]bool{}
	for _, p := range missing {
		gone[p] = true
	}
	var lost []chunkstore.ID
	var ids []chunkstore.ID
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(r.id, func(id chunkstore.ID, c index.Chunk) error {
			if !c.Lost() && gone[c.Pack] {
				ids = append(ids, id)
			}
			return nil
		})
	})
	for start := 0; err == nil && start < len(ids); start += index.MaxBatch {
		batch := ids[start:min(start+index.MaxBatch, len(ids))]
		var batchLost []chunkstore.ID
		err = s.update(func(tx *index.Tx) error {
			batchLost = batchLost[:0]
			for _, id := range batch {
				c, ok, err := tx.Chunk(r.id, id)
				if err != nil {
					return err
				}
				if !ok || c.Lost() || !gone[c.Pack] {
					continue
				}
				if c.Refs == 0 {
					err = tx.DeleteChunk(r.id, id)
				} else {
					c.MarkLost()
					batchLost = append(batchLost, id)
					err = tx.PutChunk(r.id, id, c)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		lost = append(lost, batchLost...)
	}
	if err == nil && len(lost) > 0 {
		err = s.markDamaged(ctx, r, lost, fmt.Sprintf("pack %s is missing from the repository", missing[0]))
	}
	if err != nil {
		return fmt.Errorf("backup %s: pack %s is missing from repository %s, and recording that failed: %w", b.ID, missing[0], r.url, err)
	}
	return fmt.Errorf("backup %s shares %d chunk(s) with earlier backups that were in pack %s (and %d more pack(s)), which is missing from repository %s: the catalog no longer offers them (the next backup stores them again) and backups that need them are marked damaged; run backup-create again, then volback repo-repair",
		b.ID, len(ids), missing[0], len(missing)-1, r.url)
}

// packSet is a bounded set of packs: past its size the oldest is forgotten.
type packSet struct {
	mu    sync.Mutex
	m     map[chunkstore.ID]struct{}
	order []chunkstore.ID
	next  int
	max   int
}

func newPackSet(n int) *packSet { return &packSet{m: map[chunkstore.ID]struct{}{}, max: n} }

func (p *packSet) has(id chunkstore.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.m[id]
	return ok
}

func (p *packSet) add(id chunkstore.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[id]; ok {
		return
	}
	if len(p.order) < p.max {
		p.order = append(p.order, id)
	} else {
		delete(p.m, p.order[p.next])
		p.order[p.next] = id
		p.next = (p.next + 1) % p.max
	}
	p.m[id] = struct{}{}
}
