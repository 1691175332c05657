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
}

// CheckRequest is repo-check.
type CheckRequest struct {
	Zone     string `json:"zone"`
	ReadData bool   `json:"read_data"`
}

// Check recounts every chunk reference from the manifests of the catalog's
// backups and compares with the catalog, checks that every backup's record
// and manifest and every referenced pack exist, and with readData reads and
// verifies every referenced chunk.
func (s *Service) Check(ctx context.Context, req CheckRequest) ([]CheckReport, error) {
	zones := s.cfg.ZoneNames()
	if req.Zone != "" {
		zones = []string{req.Zone}
	}
	var out []CheckReport
	for _, z := range zones {
		r, err := s.repoFor(ctx, z)
		if err != nil {
			return out, err
		}
		rep, err := s.check(ctx, r, req.ReadData)
		if err != nil {
			return out, err
		}
		out = append(out, rep)
	}
	return out, nil
}

func (s *Service) check(ctx context.Context, r *repository, readData bool) (CheckReport, error) {
	r.gc.RLock()
	defer r.gc.RUnlock()
	repoID := r.store.Config().ID
	be := r.store.Backend()
	rep := CheckReport{Repository: r.url, ReadDataTried: readData}
	problem := func(format string, a ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...)) }

	var backups []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { backups, err = tx.Backups(); return err }); err != nil {
		return rep, err
	}
	want := map[chunkstore.ID]uint32{}
	for _, b := range backups {
		if b.RepositoryID != repoID {
			continue
		}
		rep.Backups++
		if b.Status == index.StatusAvailable {
			if _, err := be.Stat(ctx, chunkstore.RecordName(b.ID)); err != nil {
				problem("backup %s: record object: %v", b.ID, err)
			}
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
	var live []index.Chunk
	var liveIDs []chunkstore.ID
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(repoID, func(id chunkstore.ID, c index.Chunk) error {
			rep.Chunks++
			if c.Refs != want[id] {
				problem("chunk %s: catalog counts %d references, manifests %d", id, c.Refs, want[id])
			}
			delete(want, id)
			packs[c.Pack] = true
			if c.Refs > 0 && readData {
				live = append(live, c)
				liveIDs = append(liveIDs, id)
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
	for p := range packs {
		if _, err := be.Stat(ctx, chunkstore.PackName(p)); err != nil {
			problem("pack %s: %v", p, err)
		}
	}
	var buf []byte
	for i, c := range live {
		data, err := r.store.ReadChunk(ctx, liveIDs[i], c.Location, buf)
		if err != nil {
			problem("chunk %s: %v", liveIDs[i], err)
			continue
		}
		buf = data
		rep.ChunksRead++
	}
	rep.ReferencesOK = len(rep.Problems) == 0
	return rep, nil
}
