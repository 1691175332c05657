package service

import (
	"context"
	"fmt"
	"sort"

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
	problem := func(format string, a ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...)) }

	var backups []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { backups, err = tx.Backups(); return err }); err != nil {
		return rep, err
	}
	want := map[chunkstore.ID]uint32{}
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
		n := b.RefsApplied
		if n > len(m.IDs) {
			problem("backup %s: counts %d references, its manifest lists %d chunks", b.ID, n, len(m.IDs))
			n = len(m.IDs)
		}
		for _, id := range m.IDs[:n] {
			want[id]++
		}
	}
	packs := map[chunkstore.ID]bool{}
	type located struct {
		id chunkstore.ID
		c  index.Chunk
	}
	var live []located
	err = s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(r.id, func(id chunkstore.ID, c index.Chunk) error {
			rep.Chunks++
			if c.Refs != want[id] {
				problem("chunk %s: catalog counts %d references, manifests %d", id, c.Refs, want[id])
			}
			delete(want, id)
			if c.Lost() {
				if c.Refs > 0 {
					problem("chunk %s is lost (found missing or corrupt): %d backup(s) need it; run volback repo-repair", id, c.Refs)
				}
				return nil
			}
			packs[c.Pack] = true
			if c.Refs > 0 && readData {
				live = append(live, located{id, c})
			}
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	missing := make([]string, 0, len(want))
	for id := range want {
		missing = append(missing, id.String())
	}
	sort.Strings(missing)
	for _, id := range missing {
		problem("chunk %s: referenced by manifests but not in the catalog", id)
	}
	rep.Packs = len(packs)
	for _, p := range sortedIDs(packs) {
		if _, err := r.store.StatPack(ctx, p); err != nil {
			problem("pack %s: %v", p, err)
		}
	}
	var buf []byte
	for _, l := range live {
		data, err := r.store.ReadChunk(ctx, l.id, l.c.Location, buf)
		if err != nil {
			if ctx.Err() != nil {
				return rep, context.Cause(ctx)
			}
			problem("chunk %s: %v", l.id, s.chunkLost(ctx, r, l.id, l.c.Location, err))
			continue
		}
		buf = data
		rep.ChunksRead++
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
