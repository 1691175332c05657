package service

import (
	"bytes"
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
	// Damaged lists the damaged backups with their damaged byte ranges.
	Damaged []VerifyReport `json:"damaged"`
	// Scrub: with --sample, where this run started and stopped in the
	// repository's chunks (by id), and how many full passes are done.
	Sample      float64 `json:"sample,omitempty"`
	ScrubFrom   string  `json:"scrub_from,omitempty"`
	ScrubTo     string  `json:"scrub_to,omitempty"`
	ScrubPasses int     `json:"scrub_passes,omitempty"`
}

// maxProblems bounds the problems a check lists; more are counted.
const maxProblems = 1000

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
	byID := map[string]*index.Backup{}
	for _, b := range backups {
		byID[b.ID] = b
	}
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
		if !baseCounted(b, byID) {
			// Its counts and its base's no longer cover its manifest.
			problem("backup %s counts its chunk references against backup %s, which is missing or not fully counted; volback repo-repair counts it in full", b.ID, b.RefsBase)
			if base := byID[b.RefsBase]; base == nil || base.RepositoryID != r.id {
				continue // its list cannot be walked
			}
		}
		if base := byID[b.RefsBase]; base != nil {
			if _, err := s.loadManifest(ctx, r, base); err != nil {
				problem("backup %s counts its chunk references against backup %s, whose manifest cannot be read: %v", b.ID, base.ID, err)
				continue
			}
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
		if err := s.readChunks(ctx, r, &rep, req.Sample, problem); err != nil {
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

// spillRefs adds one count per element of b's counted references
// ([RefsReleased, RefsApplied) of its reference list) to the catalog's
// spill scope, a batch of distinct chunks per transaction.
func (s *Service) spillRefs(ctx context.Context, r *repository, b *index.Backup, m *chunkstore.Manifest, scope string) error {
	end := int64(b.RefsApplied)
	return s.walkRefs(ctx, r, b, m, int64(b.RefsReleased), func(pos int64, ids []chunkstore.ID) error {
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

// located is a referenced chunk and its catalog entry.
type located struct {
	id chunkstore.ID
	c  index.Chunk
}

// livePages calls fn with the referenced, not lost chunks whose ids come
// after `after` (all when nil), in id order, a page at a time; no
// transaction stays open while fn runs. fn returns true to stop. ended
// says that the chunks ran out (fn saw the last one).
func (s *Service) livePages(r *repository, after *chunkstore.ID, fn func([]located) (bool, error)) (ended bool, err error) {
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
			return false, err
		}
		if stop, err := fn(page); err != nil || stop {
			return false, err
		}
		if done {
			return true, nil
		}
		after = &last
	}
}

// readChunks reads and verifies the referenced chunks, paging through the
// chunk index (memory stays bounded whatever the repository); a chunk
// that fails is recorded as lost at once. With sample > 0 it reads that
// percentage of them, resuming after the previous sampled run's cursor
// and wrapping around to the start (never reading one twice in a run),
// and records the scrub state.
func (s *Service) readChunks(ctx context.Context, r *repository, rep *CheckReport, sample float64, problem func(string, ...any)) error {
	var buf []byte
	read := func(l located) error {
		data, err := r.store.ReadChunk(ctx, l.id, l.c.Location, buf)
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			problem("chunk %s: %v", l.id, s.chunkLost(ctx, r, l.id, l.c.Location, err))
			return nil
		}
		buf = data
		rep.ChunksRead++
		return nil
	}
	if sample <= 0 {
		_, err := s.livePages(r, nil, func(page []located) (bool, error) {
			for _, l := range page {
				if err := read(l); err != nil {
					return true, err
				}
			}
			return false, nil
		})
		return err
	}
	var st index.ScrubState
	if err := s.cat.View(func(tx *index.Tx) (err error) { st, err = tx.Scrub(r.id); return err }); err != nil {
		return err
	}
	total := 0
	if _, err := s.livePages(r, nil, func(page []located) (bool, error) { total += len(page); return false, nil }); err != nil {
		return err
	}
	ended := false
	defer func() {
		if ctx.Err() == nil {
			st.LastRun = now()
			if ended {
				st.LastPass = st.LastRun
			}
			s.update(func(tx *index.Tx) error { return tx.PutScrub(st) })
		}
	}()
	if total == 0 {
		return nil
	}
	n := min(max(int(float64(total)*sample/100+0.999999), 1), total)
	var cursor *chunkstore.ID
	if st.Cursor != "" {
		if id, err := chunkstore.ParseID(st.Cursor); err == nil {
			cursor = &id
		}
	}
	// From the cursor to at most the end, then from the start up to the
	// cursor at most.
	var first, last chunkstore.ID
	count, inPass := 0, 0
	take := func(stopAt *chunkstore.ID) func([]located) (bool, error) {
		return func(page []located) (bool, error) {
			for _, l := range page {
				if count == n || stopAt != nil && bytes.Compare(l.id[:], stopAt[:]) > 0 {
					return true, nil
				}
				if count == 0 {
					first = l.id
				}
				if err := read(l); err != nil {
					return true, err
				}
				last = l.id
				count++
				inPass++
			}
			return false, nil
		}
	}
	end, err := s.livePages(r, cursor, take(nil))
	if err != nil {
		return err
	}
	if !end && count == n {
		// Did the run read the last chunk? Then the pass ended too.
		end, err = s.livePages(r, &last, func(page []located) (bool, error) { return len(page) > 0, nil })
		if err != nil {
			return err
		}
	}
	st.CheckedIn += inPass
	if end {
		ended = true
		st.Passes++
		st.CheckedIn, inPass = 0, 0
		if count < n && cursor != nil {
			if _, err := s.livePages(r, nil, take(cursor)); err != nil {
				return err
			}
		}
		st.CheckedIn = inPass
	}
	if count > 0 {
		st.Cursor = last.String()
		rep.ScrubFrom, rep.ScrubTo = first.String(), last.String()
	}
	if ended && inPass == 0 {
		st.Cursor = ""
	}
	rep.ScrubPasses = st.Passes
	return nil
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
	rep.Chunks = int(m.Refs())
	bad := map[chunkstore.ID]bool{}
	err = r.store.WalkRefs(ctx, b.ID, m, 0, func(_ int64, ids []chunkstore.ID) error {
		return s.cat.View(func(tx *index.Tx) error {
			for _, id := range ids {
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
	})
	if err == nil {
		rep.DamagedRanges, err = damagedRanges(ctx, r.store, b.ID, m, bad)
	}
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	return rep
}
