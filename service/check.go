package service

import (
	"context"
	"fmt"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
)

// CheckReport says what a consistency check of one repository found.
type CheckReport struct {
	Repository    string   `json:"repository"`
	Backups       int      `json:"backups"`
	Chunks        int      `json:"chunks"`
	ChunksRead    int      `json:"chunks_read"`
	Packs         int      `json:"packs"`
	Problems      []string `json:"problems"`
	ReferencesOK  bool     `json:"references_ok"`
	ReadDataTried bool     `json:"read_data"`
	// Packs that nothing needs: what repo-gc would delete (once they are
	// older than the grace period, for packs the catalog does not know).
	UnreferencedPacks int   `json:"unreferenced_packs"`
	UnreferencedBytes int64 `json:"unreferenced_bytes"`
}

// maxProblems bounds the problems a check lists; more are counted.
const maxProblems = 1000

// CheckRequest is repo-check.
type CheckRequest struct {
	Zone     string `json:"zone"`
	ReadData bool   `json:"read_data"`
}

// Check recounts every chunk reference from the manifests of the catalog's
// backups and compares with the catalog, checks that every backup's record
// and manifest and every referenced pack exist, reports damaged backups,
// lost chunks and packs nothing needs, and with readData reads and
// verifies every referenced chunk (a chunk that fails is recorded as lost
// at once).
func (s *Service) Check(ctx context.Context, req CheckRequest) ([]CheckReport, error) {
	repos, err := s.zoneRepos(ctx, req.Zone)
	if err != nil {
		return nil, err
	}
	var out []CheckReport
	for _, r := range repos {
		rep, err := s.check(ctx, r, req.ReadData)
		if err != nil {
			return out, err
		}
		out = append(out, rep)
	}
	return out, nil
}

func (s *Service) check(ctx context.Context, r *repository, readData bool) (CheckReport, error) {
	rep := CheckReport{Repository: r.url, ReadDataTried: readData, Problems: []string{}}
	lk, err := s.lock(ctx, r, false, "repo-check", lockWait)
	if err != nil {
		return rep, err
	}
	defer lk.Release()
	ctx, cancel := lk.Bind(ctx)
	defer cancel()
	more := 0 // problems past maxProblems, counted only
	problem := func(format string, a ...any) {
		if len(rep.Problems) < maxProblems {
			rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...))
		} else {
			more++
		}
	}
	defer func() {
		if more > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("... and %d more problems", more))
			rep.ReferencesOK = false
		}
	}()

	var backups []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { backups, err = tx.Backups(); return err }); err != nil {
		return rep, err
	}
	// The references the manifests hold are counted in the catalog's
	// spill space, then compared entry by entry in id order: memory stays
	// bounded whatever the repository.
	scope := fmt.Sprintf("check-%s-%d", r.id, time.Now().UnixNano())
	defer s.cat.DropScope(scope)
	for _, b := range backups {
		if b.RepositoryID != r.id {
			continue
		}
		rep.Backups++
		if b.Status == index.StatusAvailable {
			if ok, err := r.store.HasRecord(ctx, b.ID); err != nil || !ok {
				problem("backup %s: its record %s is missing from the repository (%v)", b.ID, chunkstore.RecordName(b.ID), err)
			}
		}
		if b.Damaged {
			problem("backup %s is damaged: %s; volback repo-repair --rewrite saves what is readable, backup-delete --force removes it", b.ID, b.DamageReason)
		}
		if b.RefsApplied == 0 && b.Status != index.StatusAvailable {
			continue
		}
		m, err := s.loadManifest(ctx, r, b)
		if err != nil {
			problem("backup %s: %v", b.ID, err)
			continue
		}
		if n := m.Refs(); int64(b.RefsApplied) > n {
			problem("backup %s: counts %d references, its manifest lists %d chunks", b.ID, b.RefsApplied, n)
		}
		if err := s.spillRefs(ctx, r, b, m, scope); err != nil {
			return rep, err
		}
	}
	packs := map[chunkstore.ID]bool{}
	err = s.cat.View(func(tx *index.Tx) error {
		return tx.CountJoin(r.id, scope, func(id chunkstore.ID, c index.Chunk, found bool, want uint32) error {
			if !found {
				problem("chunk %s: referenced by manifests but not in the catalog", id)
				return nil
			}
			rep.Chunks++
			if c.Refs != want {
				problem("chunk %s: catalog counts %d references, manifests %d", id, c.Refs, want)
			}
			if c.Lost() {
				if c.Refs > 0 {
					problem("chunk %s is lost (found missing or corrupt): %d backup(s) need it; run volback repo-repair", id, c.Refs)
				}
				return nil
			}
			packs[c.Pack] = true
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	rep.Packs = len(packs)
	for _, p := range sortedIDs(packs) {
		if _, err := r.store.StatPack(ctx, p); err != nil {
			problem("pack %s: %v", p, err)
		}
	}
	if readData {
		if err := s.readAllChunks(ctx, r, &rep, problem); err != nil {
			return rep, err
		}
	}
	// What repo-gc would remove; records it could not judge are problems.
	p, err := s.planGC(ctx, r, gcOptions{orphans: true})
	if err != nil {
		problem("%v", err)
	} else {
		for _, l := range [][]chunkstore.ID{p.dead, p.orphans} {
			for _, id := range l {
				rep.UnreferencedPacks++
				rep.UnreferencedBytes += p.listing[id].Size
			}
		}
		rep.Problems = append(rep.Problems, p.problems...)
	}
	rep.ReferencesOK = len(rep.Problems) == 0
	return rep, nil
}

// spillRefs adds one count per element of b's counted references
// ([RefsReleased, RefsApplied) of its reference list) to the catalog's
// spill scope, a batch of distinct chunks per transaction.
func (s *Service) spillRefs(ctx context.Context, r *repository, b *index.Backup, m *chunkstore.Manifest, scope string) error {
	end := int64(b.RefsApplied)
	return r.store.WalkRefs(ctx, b.ID, m, int64(b.RefsReleased), func(pos int64, ids []chunkstore.ID) error {
		if pos >= end {
			return chunkstore.ErrStopWalk
		}
		ids = ids[:min(int64(len(ids)), end-pos)]
		for len(ids) > 0 {
			n := min(len(ids), index.MaxBatch)
			counts := map[chunkstore.ID]uint32{}
			for _, id := range ids[:n] {
				counts[id]++
			}
			err := s.update(func(tx *index.Tx) error {
				for id, k := range counts {
					if err := tx.AddCount(scope, id, k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			ids = ids[n:]
		}
		return nil
	})
}

// readAllChunks reads and verifies every referenced chunk, paging through
// the chunk index (no transaction stays open during the reads); a chunk
// that fails is recorded as lost at once.
func (s *Service) readAllChunks(ctx context.Context, r *repository, rep *CheckReport, problem func(string, ...any)) error {
	type located struct {
		id chunkstore.ID
		c  index.Chunk
	}
	var after *chunkstore.ID
	var buf []byte
	for {
		var page []located
		var last chunkstore.ID
		var done bool
		err := s.cat.View(func(tx *index.Tx) (err error) {
			last, done, err = tx.ChunksAfter(r.id, after, 1000, func(id chunkstore.ID, c index.Chunk) error {
				if c.Refs > 0 && !c.Lost() {
					page = append(page, located{id, c})
				}
				return nil
			})
			return err
		})
		if err != nil {
			return err
		}
		for _, l := range page {
			data, err := r.store.ReadChunk(ctx, l.id, l.c.Location, buf)
			if err != nil {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				problem("chunk %s: %v", l.id, s.chunkLost(ctx, r, l.id, l.c.Location, err))
				continue
			}
			buf = data
			rep.ChunksRead++
		}
		if done {
			return nil
		}
		after = &last
	}
}
