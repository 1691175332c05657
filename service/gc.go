package service

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
	"github.com/volback/volback/service/failpoint"
)

// Garbage collection (docs/FORMAT.md, "GC protocol"). Everything that
// deletes packs goes through collect, under the exclusive repository lock:
//
//  1. One listing of the packs, taken first: packs written later (by this
//     very repack) are never in it, so they cannot be taken for orphans.
//  2. A chunk is live when this catalog counts a reference to it, or when
//     it is in the manifest of any record in the repository that this
//     catalog does not hold as a fully counted available backup (another
//     home's backups, records not imported yet, half-finished ones).
//  3. A chunk in pack P is needed there when it is live and not stored in
//     another existing pack the catalog points it to. Candidate packs (the
//     catalog's packs with a low live share, unknown packs older than the
//     grace period, packs of failed backups) are judged by their trailers:
//     no needed chunk -> delete; few -> repack; else keep.
//  4. The GC generation is rewritten before anything moves or goes; the
//     catalog points at repacked copies, drops dead entries, and only then,
//     with the lock checked, are packs deleted.

// GCRequest is repo-gc.
type GCRequest struct {
	Zone string `json:"zone,omitempty"`
	// Grace overrides the config's gc_grace ("0" deletes unreferenced
	// packs at once); RepackBelow its gc_repack_below.
	Grace       string   `json:"grace,omitempty"`
	RepackBelow *float64 `json:"repack_below,omitempty"`
}

// GCReport says what a garbage collection removed.
type GCReport struct {
	Repository     string   `json:"repository"`
	PacksDeleted   int      `json:"packs_deleted"`
	PacksRepacked  int      `json:"packs_repacked"`
	PacksWritten   int      `json:"packs_written"`
	OrphansDeleted int      `json:"orphan_packs_deleted"`
	OrphansYoung   int      `json:"orphan_packs_kept_young"` // unreferenced but younger than the grace period
	ChunksDropped  int      `json:"chunks_dropped"`
	WritesSettled  int      `json:"interrupted_writes_settled"` // drivers that can leave half-written objects (rados)
	BytesFreed     int64    `json:"bytes_freed"`
	Skipped        string   `json:"skipped,omitempty"`
	Problems       []string `json:"problems,omitempty"`
}

// GC collects garbage in the repository of zone, or of every zone (each
// repository once).
func (s *Service) GC(ctx context.Context, req GCRequest) ([]GCReport, error) {
	opt := gcOptions{repack: true, orphans: true, grace: s.cfg.GCGrace, repackBelow: s.cfg.GCRepackBelow}
	if req.Grace != "" {
		g, err := time.ParseDuration(req.Grace)
		if err != nil || g < 0 {
			return nil, fmt.Errorf("repo-gc: grace %q is not a duration such as 1h, 30m or 0", req.Grace)
		}
		opt.grace = g
	}
	if req.RepackBelow != nil {
		if *req.RepackBelow < 0 || *req.RepackBelow > 1 {
			return nil, fmt.Errorf("repo-gc: repack-below %v must be a live share from 0 (never repack) to 1", *req.RepackBelow)
		}
		opt.repackBelow = *req.RepackBelow
	}
	repos, err := s.zoneRepos(ctx, req.Zone)
	if err != nil {
		return nil, err
	}
	var out []GCReport
	for _, r := range repos {
		lk, err := s.lock(ctx, r, true, "repo-gc", lockWait)
		if err != nil {
			return out, err
		}
		opt.candidates, err = s.failedPacks(r)
		var rep GCReport
		if err == nil {
			rep, err = s.collect(ctx, r, lk, opt)
		}
		if err == nil {
			rep.WritesSettled, err = r.store.CleanUp(ctx, lk, opt.grace)
		}
		lk.Release()
		if err != nil {
			return out, err
		}
		out = append(out, rep)
	}
	return out, nil
}

// zoneRepos is the repository of zone, or each distinct repository of
// every zone.
func (s *Service) zoneRepos(ctx context.Context, zone string) ([]*repository, error) {
	zones := s.cfg.ZoneNames()
	if zone != "" {
		zones = []string{zone}
	}
	var out []*repository
	seen := map[string]bool{}
	for _, z := range zones {
		r, err := s.repoFor(ctx, z)
		if err != nil {
			return nil, err
		}
		if !seen[r.id] {
			seen[r.id] = true
			out = append(out, r)
		}
	}
	// The zones' other containers (repo-init --name).
	var regs []*index.Repository
	if err := s.cat.View(func(tx *index.Tx) (err error) { regs, err = tx.Repositories(); return err }); err != nil {
		return nil, err
	}
	for _, reg := range regs {
		if seen[reg.ID] || reg.Name == "" || (zone != "" && reg.Zone != zone) {
			continue
		}
		r, err := s.openRegistered(ctx, reg)
		if err != nil {
			return nil, err
		}
		seen[r.id] = true
		out = append(out, r)
	}
	return out, nil
}

type gcOptions struct {
	repack      bool
	repackBelow float64
	orphans     bool          // judge packs the catalog does not know
	grace       time.Duration // ... once they are this old
	// candidates are packs failed backups wrote: judged whatever their age.
	candidates map[chunkstore.ID]bool
}

// gcPlan is what a collection will do, from one listing.
type gcPlan struct {
	listing  map[chunkstore.ID]chunkstore.PackInfo
	dead     []chunkstore.ID                          // catalog packs without a needed chunk
	orphans  []chunkstore.ID                          // other packs without a needed chunk
	repack   map[chunkstore.ID][]chunkstore.PackEntry // needed chunks to copy out
	young    int                                      // unknown packs left for their age
	judged   map[chunkstore.ID]bool                   // candidates read (for failed backups' packs)
	problems []string
	strays   []string // objects under packs/ that are no packs
}

func (p *gcPlan) deletes() int { return len(p.dead) + len(p.orphans) + len(p.repack) }

// planGC classifies packs as the package comment says. The caller holds the
// repository lock (shared is enough for a dry run such as repo-check).
func (s *Service) planGC(ctx context.Context, r *repository, opt gcOptions) (*gcPlan, error) {
	p := &gcPlan{listing: map[chunkstore.ID]chunkstore.PackInfo{}, repack: map[chunkstore.ID][]chunkstore.PackEntry{}, judged: map[chunkstore.ID]bool{}}
	err := r.store.ListPacks(ctx, func(pi chunkstore.PackInfo) error { p.listing[pi.ID] = pi; return nil },
		func(name string) {
			p.strays = append(p.strays, fmt.Sprintf("object %s is not a pack name; ignored", name))
		})
	if err != nil {
		return nil, err
	}
	liveBytes := map[chunkstore.ID]int64{}
	err = s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(r.id, func(_ chunkstore.ID, c index.Chunk) error {
			if c.Lost() {
				return nil
			}
			if _, ok := liveBytes[c.Pack]; !ok {
				liveBytes[c.Pack] = 0
			}
			if c.Refs > 0 {
				liveBytes[c.Pack] += int64(c.Length)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var cands []chunkstore.ID
	for id, pi := range p.listing {
		live, known := liveBytes[id]
		switch {
		case known && (live == 0 || opt.repack && float64(live) < opt.repackBelow*float64(pi.Size)):
		case opt.candidates[id]:
		case !known && opt.orphans && time.Since(pi.ModTime) >= opt.grace:
		case !known && opt.orphans:
			p.young++
			continue
		default:
			continue
		}
		cands = append(cands, id)
	}
	sort.Slice(cands, func(i, j int) bool { return string(cands[i][:]) < string(cands[j][:]) })
	foreign, err := s.foreignRecords(ctx, r)
	if err != nil {
		return nil, err
	}
	// Candidates are judged in batches of about maxJudged chunks, each
	// batch against every foreign manifest read anew: memory is one batch
	// and one manifest segment, whatever the repository.
	for len(cands) > 0 {
		trailers := map[chunkstore.ID][]chunkstore.PackEntry{}
		var batch []chunkstore.ID
		inCands := map[chunkstore.ID]bool{}
		for len(cands) > 0 && len(inCands) < maxJudged {
			id := cands[0]
			cands = cands[1:]
			entries, err := r.store.ReadPackEntries(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				p.problems = append(p.problems, fmt.Sprintf("pack %s: %v (kept: what it holds is unknown)", id, err))
				continue
			}
			trailers[id] = entries
			batch = append(batch, id)
			for _, e := range entries {
				inCands[e.ID] = true
			}
		}
		live, err := s.foreignLive(ctx, r, foreign, inCands)
		if err != nil {
			return nil, err
		}
		if err := s.judge(r, p, opt, batch, trailers, liveBytes, live); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// maxJudged bounds the chunk IDs of one batch of candidate packs (about
// 6 MiB of map).
const maxJudged = 1 << 16

// judge classifies candidate packs by their trailers: a chunk is needed
// in a pack when it is live (counted here, or in a foreign manifest) and
// not stored in another pack of the listing.
func (s *Service) judge(r *repository, p *gcPlan, opt gcOptions, batch []chunkstore.ID,
	trailers map[chunkstore.ID][]chunkstore.PackEntry, liveBytes map[chunkstore.ID]int64, foreign map[chunkstore.ID]bool) error {
	for _, id := range batch {
		entries := trailers[id]
		p.judged[id] = true
		var needed []chunkstore.PackEntry
		var neededBytes int64
		err := s.cat.View(func(tx *index.Tx) error {
			for _, e := range entries {
				c, found, err := tx.Chunk(r.id, e.ID)
				if err != nil {
					return err
				}
				live := found && c.Refs > 0 || foreign[e.ID]
				_, elsewhere := p.listing[c.Pack]
				elsewhere = elsewhere && found && !c.Lost() && c.Pack != id
				if live && !elsewhere {
					needed = append(needed, e)
					neededBytes += int64(e.Length)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		_, known := liveBytes[id]
		switch {
		case len(needed) == 0 && known:
			p.dead = append(p.dead, id)
		case len(needed) == 0:
			p.orphans = append(p.orphans, id)
		case known && opt.repack && len(needed) < len(entries) && float64(neededBytes) < opt.repackBelow*float64(p.listing[id].Size):
			p.repack[id] = needed // (with nothing dead, a repack would rewrite the same pack)
		}
	}
	return nil
}

// foreignRecords lists the records in the repository that the catalog
// does not hold as fully counted available backups (another home's,
// records not imported yet, half-finished ones): their manifests keep
// chunks live.
func (s *Service) foreignRecords(ctx context.Context, r *repository) ([]string, error) {
	held := map[string]bool{}
	err := s.cat.View(func(tx *index.Tx) error {
		all, err := tx.Backups()
		byID := map[string]*index.Backup{}
		for _, b := range all {
			byID[b.ID] = b
		}
		for _, b := range all {
			if b.RepositoryID == r.id && (b.Status == index.StatusAvailable || b.Status == index.StatusRestoring) &&
				b.FullyCounted() && baseCounted(b, byID) {
				held[b.ID] = true
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var ids []string
	if err := r.store.ListRecords(ctx, func(id string) error {
		if !held[id] {
			ids = append(ids, id)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	sort.Strings(ids)
	return ids, nil
}

// baseCounted reports whether b's base, if it has one, is in the catalog
// and fully counted, so that b's counts and its base's together cover b's
// manifest. (Deletes keep it so; a catalog where it is not is judged the
// safe way: b's manifest is walked whole, like a foreign one.)
func baseCounted(b *index.Backup, byID map[string]*index.Backup) bool {
	for range len(byID) + 1 { // a chain is shorter (a cycle: a broken catalog)
		if b.RefsBase == "" {
			return true
		}
		base := byID[b.RefsBase]
		if base == nil || base.RepositoryID != b.RepositoryID || !base.FullyCounted() {
			return false
		}
		b = base
	}
	return false
}

// foreignLive returns which of want are in the manifest of a foreign
// record, reading each manifest segment by segment. A record whose
// manifest cannot be read stops the collection: its chunks are unknown, so
// nothing could be proven dead.
func (s *Service) foreignLive(ctx context.Context, r *repository, foreign []string, want map[chunkstore.ID]bool) (map[chunkstore.ID]bool, error) {
	live := map[chunkstore.ID]bool{}
	if len(want) == 0 {
		return live, nil
	}
	for _, id := range foreign {
		m, _, err := r.store.LoadManifest(ctx, id)
		if err == nil {
			err = r.store.WalkRefs(ctx, id, m, 0, func(_ int64, ids []chunkstore.ID) error {
				for _, c := range ids {
					if want[c] {
						live[c] = true
					}
				}
				return nil
			})
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if ok, herr := r.store.HasRecord(ctx, id); herr == nil && !ok {
				continue // deleted meanwhile (record first, then manifest)
			}
			return nil, fmt.Errorf("repository %s holds the record of backup %s but %v: nothing can be proven unused while its chunks are unknown, so no pack was deleted; run volback repo-repair to see what is damaged, and remove the record with volback backup-delete --force %s if the backup is beyond repair",
				r.url, id, err, id)
		}
	}
	return live, nil
}

// failedPacks is the packs recorded by backups that failed (or are gone):
// GC judges them whatever their age.
func (s *Service) failedPacks(r *repository) (map[chunkstore.ID]bool, error) {
	out := map[chunkstore.ID]bool{}
	err := s.cat.View(func(tx *index.Tx) error {
		status := map[string]string{}
		return tx.BackupPacks("", func(backupID string, pack chunkstore.ID) error {
			st, ok := status[backupID]
			if !ok {
				b, err := tx.Backup(backupID)
				switch {
				case errors.Is(err, index.ErrNotFound):
					st = "gone"
				case err != nil:
					return err
				case b.RepositoryID != r.id:
					st = "elsewhere"
				default:
					st = b.Status
				}
				status[backupID] = st
			}
			if st == "gone" || st == index.StatusError {
				out[pack] = true
			}
			return nil
		})
	})
	return out, err
}

// collect plans and carries out a collection under the exclusive lock lk.
func (s *Service) collect(ctx context.Context, r *repository, lk *chunkstore.Lock, opt gcOptions) (GCReport, error) {
	rep := GCReport{Repository: r.url}
	ctx, cancel := lk.Bind(ctx)
	defer cancel()
	p, err := s.planGC(ctx, r, opt)
	if err != nil {
		return rep, err
	}
	rep.Problems, rep.OrphansYoung = append(p.problems, p.strays...), p.young
	if p.deletes() > 0 {
		gen, err := r.store.NewGeneration(ctx, lk)
		if err != nil {
			return rep, err
		}
		if err := s.setIndexGeneration(r, gen); err != nil {
			return rep, err
		}
		failpoint.Hit("gc.generation")
		written := map[chunkstore.ID]bool{}
		if len(p.repack) > 0 {
			if written, err = s.repack(ctx, r, p.repack); err != nil {
				return rep, err
			}
			rep.PacksWritten = len(written)
			rep.PacksRepacked = len(p.repack)
		}
		gone := map[chunkstore.ID]bool{}
		for _, l := range [][]chunkstore.ID{p.dead, p.orphans} {
			for _, id := range l {
				gone[id] = true
			}
		}
		for id := range p.repack {
			gone[id] = true
		}
		for id := range written {
			delete(gone, id) // a copy identical to an old pack is that pack
		}
		if rep.ChunksDropped, err = s.dropDeadEntries(r, gone); err != nil {
			return rep, err
		}
		failpoint.Hit("gc.entries-dropped")
		for _, id := range sortedIDs(gone) {
			if err := r.store.DeletePack(ctx, lk, id); err != nil {
				return rep, err
			}
			failpoint.Hit("gc.pack-deleted")
			rep.BytesFreed += p.listing[id].Size
		}
		rep.PacksDeleted, rep.OrphansDeleted = len(p.dead), len(p.orphans)
	}
	return rep, s.forgetFailedPacks(p.judged)
}

func sortedIDs[V any](m map[chunkstore.ID]V) []chunkstore.ID {
	out := make([]chunkstore.ID, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i][:]) < string(out[j][:]) })
	return out
}

// forgetFailedPacks drops the records of failed backups' packs that a
// collection judged: deleted, or needed after all and so ordinary packs.
func (s *Service) forgetFailedPacks(judged map[chunkstore.ID]bool) error {
	type key struct {
		backup string
		pack   chunkstore.ID
	}
	var drop []key
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.BackupPacks("", func(b string, p chunkstore.ID) error {
			if judged[p] {
				drop = append(drop, key{b, p})
			}
			return nil
		})
	})
	for start := 0; err == nil && start < len(drop); start += index.MaxBatch {
		batch := drop[start:min(start+index.MaxBatch, len(drop))]
		err = s.update(func(tx *index.Tx) error {
			for _, k := range batch {
				if err := tx.DeleteBackupPack(k.backup, k.pack); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return err
}

// dropDeadEntries deletes, in batches, the catalog entries located in the
// packs about to be deleted. Entries go before their pack, so no backup can
// dedup against a chunk whose pack is gone. Every such entry is dead (the
// plan proved it); one that is referenced stops everything.
func (s *Service) dropDeadEntries(r *repository, gone map[chunkstore.ID]bool) (int, error) {
	var ids []chunkstore.ID
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(r.id, func(id chunkstore.ID, c index.Chunk) error {
			if !c.Lost() && gone[c.Pack] {
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
				c, ok, err := tx.Chunk(r.id, id)
				if err != nil {
					return err
				}
				if !ok || c.Lost() || !gone[c.Pack] {
					continue
				}
				if c.Refs > 0 {
					return fmt.Errorf("chunk %s in pack %s is referenced %d time(s) but its pack was about to be deleted: nothing was deleted; this is a bug, please report it (run volback repo-check)", id, c.Pack, c.Refs)
				}
				if err := tx.DeleteChunk(r.id, id); err != nil {
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

// repack copies the needed chunks of packs into new packs, makes them
// durable and points the catalog at the copies, pack by pack as each is
// written. A chunk that reads back missing or corrupt is recorded as lost,
// not copied. It returns the packs written.
func (s *Service) repack(ctx context.Context, r *repository, packs map[chunkstore.ID][]chunkstore.PackEntry) (map[chunkstore.ID]bool, error) {
	var mu sync.Mutex
	packsOut := map[chunkstore.ID]bool{}
	commit := func(_ context.Context, pack chunkstore.ID, entries []chunkstore.PackEntry) error {
		failpoint.Hit("gc.repack-written")
		for start := 0; start < len(entries); start += index.MaxBatch {
			batch := entries[start:min(start+index.MaxBatch, len(entries))]
			err := s.update(func(tx *index.Tx) error {
				for _, e := range batch {
					c, ok, err := tx.Chunk(r.id, e.ID)
					if err != nil {
						return err
					}
					switch {
					case !ok:
						c = index.Chunk{Location: e.Location} // live for another catalog only: now ours covers it
					case c.Lost():
						c.Location = e.Location
					case packs[c.Pack] != nil:
						c.Location = e.Location
					default:
						continue // stored elsewhere too; the catalog keeps that copy
					}
					if err := tx.PutChunk(r.id, e.ID, c); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		mu.Lock()
		packsOut[pack] = true
		mu.Unlock()
		failpoint.Hit("gc.repack-catalog")
		return nil
	}
	p := r.store.NewPacker(ctx, chunkstore.Compression{Level: s.cfg.CompressionLevel}, chunkstore.PackerOptions{Uploaders: 2, Commit: commit})
	var buf []byte
	for _, old := range sortedIDs(packs) {
		for _, e := range packs[old] {
			data, err := r.store.ReadChunk(ctx, e.ID, e.Location, buf)
			if err != nil {
				if errors.Is(err, chunkstore.ErrCorrupt) {
					s.chunkLost(ctx, r, e.ID, e.Location, err)
					continue
				}
				p.Abort()
				return nil, fmt.Errorf("repacking chunk %s: %w", e.ID, err)
			}
			buf = data
			if _, _, err := p.Add(e.ID, data); err != nil {
				p.Abort()
				return nil, err
			}
		}
	}
	if err := p.Close(); err != nil {
		return nil, err
	}
	return packsOut, nil
}

// sweep removes, if the exclusive lock is free right now, the packs that
// deletes left without a needed chunk and the packs of failed backups. It
// never repacks and never waits: a delete must not wait for backups, and
// what it leaves the next sweep or repo-gc removes.
func (s *Service) sweep(ctx context.Context, r *repository) {
	lk, err := s.lock(ctx, r, true, "sweep after backup-delete", 0)
	if errors.Is(err, chunkstore.ErrLocked) {
		return
	}
	if err != nil {
		s.log.Printf("removing unused packs of %s: %v (run volback repo-gc)", r.url, err)
		return
	}
	defer lk.Release()
	opt := gcOptions{}
	if opt.candidates, err = s.failedPacks(r); err == nil {
		_, err = s.collect(ctx, r, lk, opt)
	}
	if err != nil {
		s.log.Printf("removing unused packs of %s: %v (run volback repo-gc)", r.url, err)
	}
}
