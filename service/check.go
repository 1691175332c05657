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
	// Damaged lists the damaged backups with their damaged byte ranges.
	Damaged []VerifyReport `json:"damaged"`
	// Scrub: with --sample, where this run started and stopped in the
	// repository's chunks (by id), and how many full passes are done.
	Sample      float64 `json:"sample,omitempty"`
	ScrubFrom   string  `json:"scrub_from,omitempty"`
	ScrubTo     string  `json:"scrub_to,omitempty"`
	ScrubPasses int     `json:"scrub_passes,omitempty"`
}

// CheckRequest is repo-check.
type CheckRequest struct {
	Zone     string `json:"zone"`
	ReadData bool   `json:"read_data"`
	// Sample reads only this percentage of the referenced chunks (and
	// implies ReadData), resuming after the last chunk the previous
	// sampled run read: a scheduled scrub of bounded cost.
	Sample float64 `json:"sample,omitempty"`
	// Repository checks only this registered repository (name, URL, id).
	Repository string `json:"repository,omitempty"`
}

// Check recounts every chunk reference from the manifests of the catalog's
// backups and compares with the catalog, checks that every backup's record
// and manifest and every referenced pack exist, reports damaged backups,
// lost chunks and packs nothing needs, and with readData reads and
// verifies every referenced chunk (a chunk that fails is recorded as lost
// at once).
func (s *Service) Check(ctx context.Context, req CheckRequest) ([]CheckReport, error) {
	if req.Sample < 0 || req.Sample > 100 {
		return nil, errorf(ErrUsage, "--sample %v: a percentage above 0, at most 100", req.Sample)
	}
	var repos []*repository
	var err error
	if req.Repository != "" {
		var r *repository
		r, _, err = s.repoNamed(ctx, req.Repository)
		repos = []*repository{r}
	} else {
		repos, err = s.zoneRepos(ctx, req.Zone)
	}
	if err != nil {
		return nil, err
	}
	var out []CheckReport
	for _, r := range repos {
		rep, err := s.check(ctx, r, req)
		if err != nil {
			return out, err
		}
		out = append(out, rep)
	}
	return out, nil
}

func (s *Service) check(ctx context.Context, r *repository, req CheckRequest) (CheckReport, error) {
	readData := req.ReadData || req.Sample > 0
	rep := CheckReport{Repository: r.url, ReadDataTried: readData, Problems: []string{}, Damaged: []VerifyReport{}, Sample: req.Sample}
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
	if req.Sample > 0 {
		var st index.ScrubState
		if err := s.cat.View(func(tx *index.Tx) (err error) { st, err = tx.Scrub(r.id); return err }); err != nil {
			return rep, err
		}
		var done bool
		live, st, done = scrubSlice(live, func(l located) chunkstore.ID { return l.id }, st, req.Sample)
		defer func() {
			if ctx.Err() == nil {
				st.LastRun = now()
				if done {
					st.LastPass = st.LastRun
				}
				s.update(func(tx *index.Tx) error { return tx.PutScrub(st) })
			}
		}()
		if len(live) > 0 {
			rep.ScrubFrom, rep.ScrubTo = live[0].id.String(), live[len(live)-1].id.String()
		}
		rep.ScrubPasses = st.Passes
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
	// Damaged backups, with what is damaged.
	for _, b := range backups {
		if b.RepositoryID != r.id || !b.Damaged {
			continue
		}
		rep.Damaged = append(rep.Damaged, s.damageOf(ctx, r, b))
	}
	rep.ReferencesOK = len(rep.Problems) == 0
	return rep, nil
}

// scrubSlice picks the share pct of items (sorted by id) that the next
// scrub reads: those after the cursor, continuing from the start once the
// end is reached (a run never reads an item twice), and returns the state
// to record after it and whether a full pass ended in this run.
func scrubSlice[T any](items []T, id func(T) chunkstore.ID, st index.ScrubState, pct float64) ([]T, index.ScrubState, bool) {
	if len(items) == 0 {
		return nil, st, false
	}
	n := min(max(int(float64(len(items))*pct/100+0.999999), 1), len(items))
	start := 0
	if st.Cursor != "" {
		start = sort.Search(len(items), func(i int) bool { return id(items[i]).String() > st.Cursor })
	}
	if start == len(items) {
		start = 0
	}
	end := min(start+n, len(items))
	out := items[start:end:end]
	st.CheckedIn += len(out)
	st.Cursor = id(out[len(out)-1]).String()
	ended := end == len(items)
	if ended {
		st.Passes++
		st.Cursor, st.CheckedIn = "", 0
		if more := items[:min(n-len(out), start)]; len(more) > 0 {
			out = append(out, more...)
			st.Cursor, st.CheckedIn = id(more[len(more)-1]).String(), len(more)
		}
	}
	return out, st, ended
}

// damageOf describes a damaged backup: its lost chunks' byte ranges.
func (s *Service) damageOf(ctx context.Context, r *repository, b *index.Backup) VerifyReport {
	rep := VerifyReport{BackupID: b.ID, Damaged: true, DamagedRanges: []ByteRange{}, Problems: []string{b.DamageReason}}
	m, err := s.loadManifest(ctx, r, b)
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		rep.DamagedRanges = append(rep.DamagedRanges, ByteRange{Length: b.SizeBytes})
		return rep
	}
	rep.Chunks = len(m.IDs)
	bad := map[chunkstore.ID]bool{}
	s.cat.View(func(tx *index.Tx) error {
		for _, id := range m.IDs {
			c, ok, err := tx.Chunk(r.id, id)
			if err != nil {
				return err
			}
			if !ok || c.Lost() {
				bad[id] = true
			}
		}
		return nil
	})
	rep.DamagedRanges = damagedRanges(m, bad)
	return rep
}
