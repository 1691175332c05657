package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
)

// RebuildRequest is catalog-rebuild.
type RebuildRequest struct {
	Repository string `json:"repository"` // one configured repository URL; empty = every zone's
}

// RebuildReport says what catalog-rebuild found and imported.
type RebuildReport struct {
	Repositories    []string `json:"repositories"`
	Backups         int      `json:"backups"` // records found
	BackupsImported int      `json:"backups_imported"`
	VolumesCreated  int      `json:"volumes_created"` // placeholders for volumes the catalog did not know
	Packs           int      `json:"packs"`
	Chunks          int      `json:"chunks"`  // pack trailer entries
	Skipped         []string `json:"skipped"` // ids of inconsistent backups left out
	Problems        []string `json:"problems"`
}

// packScan is what reading pack trailers found.
type packScan struct {
	packs    int
	chunks   int
	problems []string // unreadable packs, stray names
}

// stagePacks reads the trailer of every pack of r once and keeps each
// chunk's location in the catalog's spill scope (the first copy found
// wins): all of them, or with onlyUnknown those the chunk index has no
// location for. Memory is one batch of entries, whatever the repository.
func (s *Service) stagePacks(ctx context.Context, r *repository, scope string, onlyUnknown bool) (packScan, error) {
	var ps packScan
	var batch []chunkstore.PackEntry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.update(func(tx *index.Tx) error {
			for _, e := range batch {
				if onlyUnknown {
					if c, ok, err := tx.Chunk(r.id, e.ID); err != nil {
						return err
					} else if ok && !c.Lost() {
						continue
					}
				}
				if err := tx.PutStaged(scope, e.ID, e.Location); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	st := r.store
	err := st.ListPacks(ctx, func(p chunkstore.PackInfo) error {
		ps.packs++
		entries, err := st.ReadPackEntries(ctx, p.ID)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ps.problems = append(ps.problems, fmt.Sprintf("pack %s is unreadable: %v", p.ID, err))
			return nil
		}
		ps.chunks += len(entries)
		for len(entries) > 0 {
			n := min(len(entries), index.MaxBatch-len(batch))
			batch = append(batch, entries[:n]...)
			entries = entries[n:]
			if len(batch) == index.MaxBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	}, func(name string) {
		ps.problems = append(ps.problems, fmt.Sprintf("object %s is not a pack name; ignored", name))
	})
	if err == nil {
		err = flush()
	}
	return ps, err
}

// missingRefs walks a manifest's reference list and returns the first
// chunk that has neither a location in the chunk index nor a staged one
// in scope ("" for none), and how many there are.
func (s *Service) missingRefs(ctx context.Context, r *repository, backupID string, m *chunkstore.Manifest, scope string) (int, chunkstore.ID, error) {
	var n int
	var first chunkstore.ID
	err := r.store.WalkRefs(ctx, backupID, m, 0, func(_ int64, ids []chunkstore.ID) error {
		return s.cat.View(func(tx *index.Tx) error {
			for _, id := range ids {
				if c, ok, err := tx.Chunk(r.id, id); err != nil {
					return err
				} else if ok && !c.Lost() {
					continue
				}
				if scope != "" {
					if _, ok, err := tx.Staged(scope, id); err != nil {
						return err
					} else if ok {
						continue
					}
				}
				if n++; n == 1 {
					first = id
				}
			}
			return nil
		})
	})
	return n, first, err
}

// locateMissing finds, in pack trailers, the chunks of a backup the
// catalog does not know (or knows as lost), staging their locations in a
// spill scope it returns ("" when none were missing; the caller drops the
// scope). A chunk in no pack refuses the import.
func (s *Service) locateMissing(ctx context.Context, r *repository, backupID string, m *chunkstore.Manifest) (string, error) {
	n, _, err := s.missingRefs(ctx, r, backupID, m, "")
	if err != nil || n == 0 {
		return "", err
	}
	scope := "import-" + backupID
	if err := s.cat.DropScope(scope); err != nil {
		return "", err
	}
	ps, err := s.stagePacks(ctx, r, scope, true)
	if err == nil {
		var first chunkstore.ID
		if n, first, err = s.missingRefs(ctx, r, backupID, m, scope); err == nil && n > 0 {
			why := ""
			if len(ps.problems) > 0 {
				why = " (" + strings.Join(ps.problems, "; ") + ")"
			}
			err = fmt.Errorf("backup %s: chunk %s (and %d more) is in no pack of repository %s%s: the backup's data is incomplete and cannot be imported",
				backupID, first, n-1, r.url, why)
		}
	}
	if err != nil {
		s.cat.DropScope(scope)
		return "", err
	}
	return scope, nil
}

// backupFromRecord is the catalog entry of an imported record.
func backupFromRecord(rec *chunkstore.Record) *index.Backup {
	return &index.Backup{ID: rec.ID, Name: rec.Name, Description: rec.Description, Status: index.StatusCreating,
		VolumeID: rec.VolumeID, VolumeName: rec.VolumeName, ParentID: rec.ParentID, SnapshotID: rec.SnapshotID,
		IsIncremental: rec.IsIncremental, SizeBytes: rec.SizeBytes, ObjectCount: rec.ObjectCount,
		StoredBytes: rec.StoredBytes, AvailabilityZone: rec.AvailabilityZone, Container: rec.Container,
		RepositoryID: rec.RepositoryID, ProjectID: rec.ProjectID, ManifestDigest: rec.ManifestDigest,
		Imported: true, CreatedAt: rec.CreatedAt, UpdatedAt: now(), DataTimestamp: rec.DataTimestamp, Consistency: rec.Consistency,
		ConsistencyDetail: rec.ConsistencyDetail}
}

// commitImport registers a verified record: a `creating` entry marked
// Imported, then the references in the same crash-safe batches as a backup
// (chunks the catalog did not know enter with their first reference, from
// the staged locations of scope, so a crash never leaves unreferenced
// entries a sweep would take for dead packs), then `available`, unmarking children that waited for it.
// The caller holds r.gc (read). On a failure after the entry exists it
// returns the entry so the caller can abortImport.
func (s *Service) commitImport(ctx context.Context, r *repository, rec *chunkstore.Record, m *chunkstore.Manifest,
	scope string, placeholder bool) (*index.Backup, error) {
	b := backupFromRecord(rec)
	b.ObjectCount = int(m.Refs())
	err := s.update(func(tx *index.Tx) error {
		if _, err := tx.Backup(b.ID); err == nil {
			return errBackupExists(b.ID)
		} else if !errors.Is(err, index.ErrNotFound) {
			return err
		}
		b.MissingParent = false
		if b.IsIncremental {
			if _, err := tx.Backup(b.ParentID); errors.Is(err, index.ErrNotFound) {
				b.MissingParent = true
			} else if err != nil {
				return err
			}
		}
		if placeholder {
			if _, err := tx.Volume(b.VolumeID); errors.Is(err, index.ErrNotFound) {
				if err := tx.PutVolume(s.rebuiltVolume(rec)); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
		}
		if !placeholder { // an import counts against its project's quotas (a rebuild puts back what was counted)
			if err := reserveBackup(tx, b.ProjectID, b.SizeBytes); err != nil {
				return fmt.Errorf("backup-import of %s: %w", b.ID, err)
			}
		}
		return tx.PutBackup(b)
	})
	if err != nil {
		return nil, err
	}
	var staged func(*index.Tx, chunkstore.ID) (chunkstore.Location, bool, error)
	if scope != "" {
		staged = func(tx *index.Tx, id chunkstore.ID) (chunkstore.Location, bool, error) { return tx.Staged(scope, id) }
	}
	err = r.store.WalkRefs(ctx, b.ID, m, 0, func(pos int64, ids []chunkstore.ID) error {
		return s.countRefs(r, b, pos, ids, staged, nil)
	})
	if err != nil {
		return b, err
	}
	err = s.update(func(tx *index.Tx) error {
		cur, err := tx.Backup(b.ID)
		if err != nil {
			return err
		}
		cur.Status, cur.UpdatedAt = index.StatusAvailable, now()
		if err := tx.PutBackup(cur); err != nil {
			return err
		}
		all, err := tx.Backups()
		if err != nil {
			return err
		}
		for _, o := range all {
			if o.ParentID == b.ID && o.MissingParent {
				o.MissingParent, o.UpdatedAt = false, now()
				if err := tx.PutBackup(o); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return b, fmt.Errorf("registering imported backup %s: %w", b.ID, err)
	}
	return nil, nil
}

// abortImport undoes an unfinished import: its references go (rollbackBackup
// keeps an imported backup's repository objects) and so does its catalog
// entry. Recovery calls it for imports a crash interrupted.
func (s *Service) abortImport(ctx context.Context, r *repository, b *index.Backup) error {
	if err := s.rollbackBackup(ctx, r, b); err != nil {
		return err
	}
	return s.update(func(tx *index.Tx) error {
		if err := tx.DeleteBackup(b.ID); err != nil && !errors.Is(err, index.ErrNotFound) {
			return err
		}
		return nil
	})
}

// undoImport aborts an import whose references were being counted, under
// the exclusive lock: entries it drops must not vanish under a backup's
// dedup. Failing that, recovery retries when volback restarts.
func (s *Service) undoImport(ctx context.Context, r *repository, b *index.Backup) {
	ctx = context.WithoutCancel(ctx)
	lk, err := s.lock(ctx, r, true, "undo backup-import "+b.ID, lockWait)
	if err == nil {
		err = s.abortImport(ctx, r, b)
		lk.Release()
	}
	if err != nil {
		s.log.Printf("backup %s: undoing a failed import: %v (volback retries when it restarts)", b.ID, err)
	}
}

// dropImportRefs releases the counted references of an import, last batch
// first, and deletes the chunk entries that fall to zero: after a lost
// catalog those entries would be the only ones naming their packs, and a
// sweep would delete packs the import (or a later one) needs.
func (s *Service) dropImportRefs(ctx context.Context, r *repository, b *index.Backup) error {
	if b.RefsApplied == 0 {
		return nil
	}
	m, err := s.loadManifest(ctx, r, b)
	if err != nil {
		return err
	}
	return s.releaseRefs(ctx, r, b, m, true)
}

// RebuildCatalog fills an empty catalog from the repositories: every
// consistent backup record is imported (parents first) with placeholder
// volumes for volumes the catalog does not know (or, for volumes volback
// created, their image files found again under <home>/volumes/; images
// there that no record names are listed as problems), and its chunk references
// are counted from its manifest and the pack trailers. Inconsistent backups
// (no manifest, digest or size mismatch, chunks in no pack) are skipped and
// listed; unreadable packs are listed.
func (s *Service) RebuildCatalog(ctx context.Context, req RebuildRequest) (*RebuildReport, error) {
	var n int
	if err := s.cat.View(func(tx *index.Tx) error {
		all, err := tx.Backups()
		n = len(all)
		return err
	}); err != nil {
		return nil, err
	}
	catDir := filepath.Join(s.cfg.Home, "catalog")
	if n > 0 {
		return nil, fmt.Errorf("the catalog at %s already has %d backup(s); catalog-rebuild only fills an empty catalog: stop volback, move %s away (keep it until the rebuild is checked) and run catalog-rebuild again",
			catDir, n, catDir)
	}
	repos, err := s.rebuildRepos(ctx, req.Repository)
	if err != nil {
		return nil, err
	}
	rep := &RebuildReport{Repositories: []string{}, Skipped: []string{}, Problems: []string{}}
	for _, r := range repos {
		if err := s.rebuildRepo(ctx, r, rep); err != nil {
			return rep, err
		}
	}
	rep.Problems = append(rep.Problems, s.strayImages()...)
	return rep, nil
}

// rebuildRepos is each distinct repository to rebuild from.
func (s *Service) rebuildRepos(ctx context.Context, url string) ([]*repository, error) {
	var out []*repository
	seen := map[string]bool{}
	for _, z := range s.cfg.ZoneNames() {
		if url != "" && strings.TrimRight(s.cfg.Zones[z].Repository, "/") != strings.TrimRight(url, "/") {
			continue
		}
		r, err := s.repoFor(ctx, z)
		if err != nil {
			return nil, err
		}
		if id := r.store.Config().ID; !seen[id] {
			seen[id] = true
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("repository %s is not configured in any zone; add [zones.NAME] repository = %q to %s and run catalog-rebuild again",
			url, url, filepath.Join(s.cfg.Home, ConfigName))
	}
	return out, nil
}

type rebuildItem struct {
	rec *chunkstore.Record
	m   *chunkstore.Manifest
}

func (s *Service) rebuildRepo(ctx context.Context, r *repository, rep *RebuildReport) error {
	lk, err := s.lock(ctx, r, false, "catalog-rebuild", lockWait)
	if err != nil {
		return err
	}
	defer lk.Release()
	repoID := r.id
	rep.Repositories = append(rep.Repositories, r.url)
	problem := func(format string, a ...any) {
		rep.Problems = append(rep.Problems, r.url+": "+fmt.Sprintf(format, a...))
	}
	skip := func(id string, format string, a ...any) {
		rep.Skipped = append(rep.Skipped, id)
		why := strings.TrimPrefix(fmt.Sprintf(format, a...), "backup "+id+": ")
		problem("backup %s skipped: %s", id, why)
	}

	var names []string
	if err := r.store.ListRecords(ctx, func(id string) error { names = append(names, id); return nil }); err != nil {
		return err
	}
	sort.Strings(names)
	rep.Backups += len(names)
	// Every pack's entries, staged in the catalog (not in memory) while
	// the backups are imported; what no backup references is dropped with
	// the scope, so unreferenced packs stay unknown (orphans after their
	// grace period, as before the catalog was lost).
	scope := "rebuild-" + r.id
	if err := s.cat.DropScope(scope); err != nil {
		return err
	}
	defer s.cat.DropScope(scope)
	ps, err := s.stagePacks(ctx, r, scope, false)
	if err != nil {
		return err
	}
	rep.Packs += ps.packs
	rep.Chunks += ps.chunks
	for _, p := range ps.problems {
		problem("%s", p)
	}

	good := map[string]*rebuildItem{}
	for _, id := range names {
		rec, err := r.store.GetRecord(ctx, id)
		if err != nil {
			skip(id, "reading its record: %v", err)
			continue
		}
		if rec.RepositoryID != repoID {
			err = fmt.Errorf("the record names repository %s, this is %s", rec.RepositoryID, repoID)
		}
		if err == nil {
			err = (&ExportRecord{Record: *rec}).Validate()
		}
		if err != nil {
			skip(id, "%v", err)
			continue
		}
		m, err := s.verifyRecord(ctx, r, rec)
		if err != nil {
			skip(id, "%v", err)
			continue
		}
		if n, first, err := s.missingRefs(ctx, r, id, m, scope); err != nil {
			skip(id, "%v", err)
			continue
		} else if n > 0 {
			skip(id, "chunk %s (and %d more) is in no readable pack", first, n-1)
			continue
		}
		good[id] = &rebuildItem{rec, m}
	}

	// Parents first: order by depth in the chain, then by creation.
	depth := map[string]int{}
	var depthOf func(id string, guard int) int
	depthOf = func(id string, guard int) int {
		if d, ok := depth[id]; ok {
			return d
		}
		d := 0
		if it := good[id]; it != nil && it.rec.ParentID != "" && good[it.rec.ParentID] != nil && guard < len(good) {
			d = depthOf(it.rec.ParentID, guard+1) + 1
		}
		depth[id] = d
		return d
	}
	order := make([]*rebuildItem, 0, len(good))
	for id, it := range good {
		depthOf(id, 0)
		order = append(order, it)
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := order[i].rec, order[j].rec
		if depth[a.ID] != depth[b.ID] {
			return depth[a.ID] < depth[b.ID]
		}
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.Before(b.CreatedAt)
		}
		return a.ID < b.ID
	})

	volsBefore, err := s.countVolumes()
	if err != nil {
		return err
	}
	defer func() {
		if after, err := s.countVolumes(); err == nil {
			rep.VolumesCreated += after - volsBefore
		}
	}()
	for _, it := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := s.commitImport(ctx, r, it.rec, it.m, scope, true)
		if b != nil && err != nil {
			// The catalog was empty: no backup of this home can be
			// deduplicating against what the abort drops.
			if aerr := s.abortImport(context.WithoutCancel(ctx), r, b); aerr != nil {
				return fmt.Errorf("%w; undoing it: %v (volback retries when it restarts)", err, aerr)
			}
		}
		if err != nil {
			if errors.Is(err, index.ErrTxnTooBig) || cancelled(err) {
				return err
			}
			skip(it.rec.ID, "%v", err)
			continue
		}
		rep.BackupsImported++
		if it.rec.IsIncremental && good[it.rec.ParentID] == nil {
			problem("backup %s is an incremental of backup %s, which has no consistent record here; imported, but restore refuses it until %s is imported",
				it.rec.ID, it.rec.ParentID, it.rec.ParentID)
		}
	}
	return nil
}

func (s *Service) countVolumes() (int, error) {
	var n int
	err := s.cat.View(func(tx *index.Tx) error {
		vols, err := tx.Volumes()
		n = len(vols)
		return err
	})
	return n, err
}
