package service

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
)

// RepairRequest is repo-repair.
type RepairRequest struct {
	Zone string `json:"zone,omitempty"`
	// ReadData also reads and verifies every chunk, not only that its
	// pack lists it.
	ReadData bool `json:"read_data,omitempty"`
	// Rewrite writes, for every damaged backup, a new backup of what is
	// still readable, its lost chunks as zeros.
	Rewrite bool `json:"rewrite,omitempty"`
}

// RepairReport says what repo-repair found and changed in one repository.
type RepairReport struct {
	Repository      string   `json:"repository"`
	ChunksChecked   int      `json:"chunks_checked"`
	ChunksRelocated int      `json:"chunks_relocated"` // found in another pack
	ChunksDropped   int      `json:"chunks_dropped"`   // unreferenced and gone
	ChunksLost      int      `json:"chunks_lost"`      // referenced and gone: their backups are damaged
	RefsFixed       int      `json:"references_fixed"`
	Damaged         []string `json:"damaged"`   // backups that need a lost chunk
	Healed          []string `json:"healed"`    // backups no longer damaged
	Rewritten       []string `json:"rewritten"` // new backups written by --rewrite
	Problems        []string `json:"problems"`
}

// Repair checks every chunk the catalog locates against the packs, moves
// entries to another copy when there is one, records the rest as lost,
// recounts references from the manifests, marks damaged backups (and
// unmarks healed ones), and with Rewrite saves what is still readable of
// each damaged backup as a new backup. It holds the exclusive lock.
func (s *Service) Repair(ctx context.Context, req RepairRequest) ([]RepairReport, error) {
	repos, err := s.zoneRepos(ctx, req.Zone)
	if err != nil {
		return nil, err
	}
	var out []RepairReport
	for _, r := range repos {
		lk, err := s.lock(ctx, r, true, "repo-repair", lockWait)
		if err != nil {
			return out, err
		}
		rep, err := s.repair(ctx, r, lk, req)
		lk.Release()
		if err != nil {
			return out, err
		}
		out = append(out, rep)
	}
	return out, nil
}

func (s *Service) repair(ctx context.Context, r *repository, lk *chunkstore.Lock, req RepairRequest) (RepairReport, error) {
	rep := RepairReport{Repository: r.url, Damaged: []string{}, Healed: []string{}, Rewritten: []string{}, Problems: []string{}}
	ctx, cancel := lk.Bind(ctx)
	defer cancel()
	problem := func(format string, a ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...)) }

	// 1. Every located chunk must be where its entry says. Pack by pack,
	// entries found where the catalog locates them are marked in the
	// catalog's spill space; the unmarked ones are bad.
	listed := map[chunkstore.ID]bool{}
	if err := r.store.ListPacks(ctx, func(p chunkstore.PackInfo) error { listed[p.ID] = true; return nil }, nil); err != nil {
		return rep, err
	}
	scope := fmt.Sprintf("repair-%s-%d", r.id, time.Now().UnixNano())
	defer s.cat.DropScope(scope)
	readable := func(id chunkstore.ID, loc chunkstore.Location) bool {
		if !req.ReadData {
			return true
		}
		_, err := r.store.ReadChunk(ctx, id, loc, nil)
		return err == nil
	}
	for _, p := range sortedIDs(listed) {
		entries, err := r.store.ReadPackEntries(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return rep, context.Cause(ctx)
			}
			problem("pack %s: %v", p, err)
			continue
		}
		var match []chunkstore.ID
		err = s.cat.View(func(tx *index.Tx) error {
			for _, e := range entries {
				c, ok, err := tx.Chunk(r.id, e.ID)
				if err != nil {
					return err
				}
				if ok && !c.Lost() && c.Location == e.Location && readable(e.ID, e.Location) {
					match = append(match, e.ID)
				}
			}
			return nil
		})
		for start := 0; err == nil && start < len(match); start += index.MaxBatch {
			batch := match[start:min(start+index.MaxBatch, len(match))]
			err = s.update(func(tx *index.Tx) error {
				for _, id := range batch {
					if err := tx.AddCount(scope, id, 1); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err != nil {
			return rep, err
		}
	}
	type entry struct {
		id chunkstore.ID
		c  index.Chunk
	}
	var bad []entry
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.CountJoin(r.id, scope, func(id chunkstore.ID, c index.Chunk, found bool, ok uint32) error {
			if !found {
				return nil
			}
			rep.ChunksChecked++
			if ok == 0 {
				bad = append(bad, entry{id, c})
			}
			return nil
		})
	})
	if err != nil {
		return rep, err
	}
	if ctx.Err() != nil {
		return rep, context.Cause(ctx)
	}
	if len(bad) > 0 {
		// Another copy, anywhere?
		wanted := map[chunkstore.ID]bool{}
		for _, e := range bad {
			wanted[e.id] = true
		}
		found := map[chunkstore.ID]chunkstore.Location{}
		for _, p := range sortedIDs(listed) {
			entries, err := r.store.ReadPackEntries(ctx, p)
			if err != nil {
				continue // reported above
			}
			for _, e := range entries {
				if _, done := found[e.ID]; !done && wanted[e.ID] && readable(e.ID, e.Location) {
					found[e.ID] = e.Location
				}
			}
		}
		var lost []chunkstore.ID
		for start := 0; start < len(bad); start += index.MaxBatch {
			batch := bad[start:min(start+index.MaxBatch, len(bad))]
			err := s.update(func(tx *index.Tx) error {
				for _, e := range batch {
					c, ok, err := tx.Chunk(r.id, e.id)
					if err != nil || !ok {
						return err
					}
					switch l, moved := found[e.id]; {
					case moved:
						c.Location = l
						rep.ChunksRelocated++
						err = tx.PutChunk(r.id, e.id, c)
					case c.Refs == 0:
						rep.ChunksDropped++
						err = tx.DeleteChunk(r.id, e.id)
					default:
						if !c.Lost() {
							c.MarkLost()
							err = tx.PutChunk(r.id, e.id, c)
						}
						lost = append(lost, e.id)
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
		}
		rep.ChunksLost = len(lost)
	}

	// 2. References, recounted from the manifests.
	fixed, err := s.recount(ctx, r)
	if err != nil {
		problem("%v", err)
	}
	rep.RefsFixed = fixed

	// 3. Damaged backups, marked and unmarked.
	var backups []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { backups, err = tx.Backups(); return err }); err != nil {
		return rep, err
	}
	damaged := map[string]*chunkstore.Manifest{} // heads
	for _, b := range backups {
		if b.RepositoryID != r.id || b.ManifestDigest == "" || (b.Status != index.StatusAvailable && b.Status != index.StatusRestoring) {
			continue
		}
		reason := ""
		m, err := s.loadManifest(ctx, r, b)
		if err != nil {
			reason = err.Error()
			problem("backup %s: %v; it cannot be repaired: remove it with backup-delete --force %s", b.ID, err, b.ID)
		} else if n, first, err := s.lostIn(ctx, r, b.ID, m); err != nil {
			reason = err.Error()
			problem("backup %s: %v; it cannot be repaired: remove it with backup-delete --force %s", b.ID, err, b.ID)
		} else if n > 0 {
			reason = fmt.Sprintf("%d chunk(s) are lost (first: %s)", n, first)
			damaged[b.ID] = m
		}
		if err := s.setDamaged(b.ID, reason); err != nil {
			return rep, err
		}
		switch {
		case reason != "":
			rep.Damaged = append(rep.Damaged, b.ID)
		case b.Damaged:
			rep.Healed = append(rep.Healed, b.ID)
		}
	}

	// 4. Records the catalog does not know whose manifest is unreadable
	// keep repo-gc from running.
	held := map[string]bool{}
	for _, b := range backups {
		held[b.ID] = true
	}
	if err := r.store.ListRecords(ctx, func(id string) error {
		if held[id] {
			return nil
		}
		m, _, err := r.store.LoadManifest(ctx, id)
		if err == nil {
			err = r.store.WalkRefs(ctx, id, m, 0, func(int64, []chunkstore.ID) error { return nil })
		}
		if err != nil {
			problem("record of backup %s, which the catalog does not know: %v; repo-gc refuses to run while it exists: import the backup if its manifest can be restored, or remove the record with backup-delete --force %s", id, err, id)
		}
		return nil
	}); err != nil {
		return rep, err
	}

	// 5. What is still readable of each damaged backup, as a new backup.
	if req.Rewrite {
		ids := make([]string, 0, len(damaged))
		for id := range damaged {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			nb, err := s.rewriteDamaged(ctx, r, id, damaged[id])
			if err != nil {
				problem("rewriting backup %s: %v", id, err)
				continue
			}
			rep.Rewritten = append(rep.Rewritten, nb)
		}
	}
	return rep, nil
}

// lostIn counts the chunks of a backup's manifest m that are lost or not
// in the catalog, reading it segment by segment.
func (s *Service) lostIn(ctx context.Context, r *repository, backupID string, m *chunkstore.Manifest) (int, string, error) {
	n, first := 0, ""
	err := r.store.WalkRefs(ctx, backupID, m, 0, func(_ int64, ids []chunkstore.ID) error {
		return s.cat.View(func(tx *index.Tx) error {
			for _, id := range ids {
				c, ok, err := tx.Chunk(r.id, id)
				if err != nil {
					return err
				}
				if !ok || c.Lost() {
					if n++; n == 1 {
						first = id.String()
					}
				}
			}
			return nil
		})
	})
	return n, first, err
}

func (s *Service) setDamaged(id, reason string) error {
	return s.update(func(tx *index.Tx) error {
		b, err := tx.Backup(id)
		if err != nil {
			return err
		}
		if b.Damaged == (reason != "") && b.DamageReason == reason {
			return nil
		}
		b.Damaged, b.DamageReason, b.UpdatedAt = reason != "", reason, now()
		return tx.PutBackup(b)
	})
}

// rewriteDamaged stores a new full backup holding what is readable of
// damaged backup id (manifest head m): every lost chunk becomes zeros (a
// hole). It is written segment by segment, each segment's references
// counted as it is stored, as a backup does.
func (s *Service) rewriteDamaged(ctx context.Context, r *repository, id string, m *chunkstore.Manifest) (string, error) {
	var old *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { old, err = tx.Backup(id); return err }); err != nil {
		return "", err
	}
	t := now()
	b := &index.Backup{ID: uuid.NewString(), Name: old.Name + " (repaired)", Status: index.StatusCreating,
		VolumeID: old.VolumeID, VolumeName: old.VolumeName, SizeBytes: m.Size, AvailabilityZone: old.AvailabilityZone,
		Container: old.Container, RepositoryID: r.id, ProjectID: old.ProjectID, Consistency: old.Consistency,
		CreatedAt: t, UpdatedAt: t, DataTimestamp: old.DataTimestamp}
	if err := s.update(func(tx *index.Tx) error { return tx.PutBackup(b) }); err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		s.failBackup(ctx, r, b, err)
		return "", err
	}
	w := r.store.NewManifestWriter(b.ID, m.Size)
	zeroed := 0
	for k, ref := range m.Segments {
		g, err := r.store.LoadSegment(ctx, id, m, k)
		if err != nil {
			return fail(err)
		}
		ng := w.Manifest().NewSegment(int(ref.Slot))
		err = s.cat.View(func(tx *index.Tx) error {
			for i := g.First; i < g.First+int64(g.Len()); i++ {
				cid, ok := g.Chunk(i)
				if !ok {
					continue
				}
				c, found, err := tx.Chunk(r.id, cid)
				if err != nil {
					return err
				}
				if !found || c.Lost() {
					zeroed++
					continue
				}
				ng.Set(i, cid)
			}
			return nil
		})
		if err != nil {
			return fail(err)
		}
		ids, pos, err := w.Put(ctx, ng)
		if err == nil {
			err = s.countRefs(r, b, pos, ids, nil, nil)
		}
		if err != nil {
			return fail(err)
		}
	}
	digest, err := w.Finish(ctx)
	if err != nil {
		return fail(err)
	}
	b.ObjectCount = int(w.Manifest().Refs())
	b.ManifestDigest = digest.String()
	b.Description = fmt.Sprintf("repo-repair --rewrite of damaged backup %s: %d of its %d chunks were lost and read as zeros", old.ID, zeroed, m.Chunks())
	vol := &index.Volume{Size: m.Size}
	if err := r.store.PutRecord(ctx, record(b, vol, m.ChunkSize)); err != nil {
		return fail(err)
	}
	err = s.update(func(tx *index.Tx) error {
		b.Status, b.UpdatedAt = index.StatusAvailable, now()
		return tx.PutBackup(b)
	})
	if err != nil {
		return fail(err)
	}
	return b.ID, nil
}

// recountRefs recounts the references of r under the exclusive lock (a
// backup was deleted without a readable manifest).
func (s *Service) recountRefs(ctx context.Context, r *repository) error {
	lk, err := s.lock(ctx, r, true, "recount references", lockWait)
	if err != nil {
		return err
	}
	defer lk.Release()
	_, err = s.recount(ctx, r)
	return err
}

// recount sets every chunk entry's references to the number of catalog
// backups' counted references to it (counted in the catalog's spill
// space, manifest segment by segment), and returns how many entries
// changed. Referenced chunks without an entry become lost entries. It
// refuses when a counted manifest cannot be read.
func (s *Service) recount(ctx context.Context, r *repository) (int, error) {
	var backups []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { backups, err = tx.Backups(); return err }); err != nil {
		return 0, err
	}
	scope := fmt.Sprintf("recount-%s-%d", r.id, time.Now().UnixNano())
	defer s.cat.DropScope(scope)
	if err := s.countInFull(ctx, r, backups); err != nil {
		return 0, err
	}
	for _, b := range backups {
		if b.RepositoryID != r.id || b.RefsApplied == 0 {
			continue
		}
		m, err := s.loadManifest(ctx, r, b)
		if err == nil {
			err = s.spillRefs(ctx, r, b, m, scope)
		}
		if err != nil {
			return 0, fmt.Errorf("references not recounted: backup %s counts references but %v; remove it with backup-delete --force %s, then run repo-repair again", b.ID, err, b.ID)
		}
	}
	type fix struct {
		id   chunkstore.ID
		refs uint32
		lost bool // no entry: a new lost one
	}
	var fixes []fix
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.CountJoin(r.id, scope, func(id chunkstore.ID, c index.Chunk, found bool, want uint32) error {
			if !found || c.Refs != want {
				fixes = append(fixes, fix{id, want, !found})
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	var lost []chunkstore.ID
	for start := 0; start < len(fixes); start += index.MaxBatch {
		batch := fixes[start:min(start+index.MaxBatch, len(fixes))]
		err := s.update(func(tx *index.Tx) error {
			for _, f := range batch {
				c, ok, err := tx.Chunk(r.id, f.id)
				if err != nil {
					return err
				}
				c.Refs = f.refs // a new entry is a lost one: its location is zero
				if ok && c.Refs == 0 && c.Lost() {
					err = tx.DeleteChunk(r.id, f.id)
				} else {
					err = tx.PutChunk(r.id, f.id, c)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	for _, f := range fixes {
		if f.lost {
			lost = append(lost, f.id)
		}
	}
	if len(lost) > 0 {
		if err := s.markDamaged(ctx, r, lost, fmt.Sprintf("chunk %s is in no pack the catalog knows", lost[0])); err != nil {
			return len(fixes), err
		}
	}
	return len(fixes), nil
}

// countInFull switches to full counting every backup of r that counts
// against a base that is missing or not fully counted (deletes never leave
// one; a damaged catalog might), so that the recount that follows counts
// its whole manifest. backups is updated in place.
func (s *Service) countInFull(ctx context.Context, r *repository, backups []*index.Backup) error {
	byID := map[string]*index.Backup{}
	for _, b := range backups {
		byID[b.ID] = b
	}
	for changed := true; changed; { // a switched base may make its children whole again
		changed = false
		for _, b := range backups {
			if b.RepositoryID != r.id || b.RefsBase == "" || baseCounted(b, byID) ||
				(b.RefsApplied == 0 && b.Status != index.StatusAvailable) {
				continue
			}
			m, err := s.loadManifest(ctx, r, b)
			if err != nil {
				return fmt.Errorf("references not recounted: backup %s counts against backup %s, which is missing or not fully counted, and %v; remove it with backup-delete --force %s, then run repo-repair again", b.ID, b.RefsBase, err, b.ID)
			}
			err = s.update(func(tx *index.Tx) error {
				cur, err := tx.Backup(b.ID)
				if err != nil {
					return err
				}
				cur.RefsBase, cur.RefsApplied, cur.RefsReleased, cur.RefsTotal, cur.UpdatedAt = "", int(m.Refs()), 0, int(m.Refs()), now()
				*b = *cur
				return tx.PutBackup(cur)
			})
			if err != nil {
				return err
			}
			s.log.Printf("backup %s counted its references against a base that is missing or not fully counted; it now counts them in full", b.ID)
			changed = true
		}
	}
	return nil
}

// busy reports whether a job of this process (a backup being created or
// restored) works on backup id, so that --force does not pull it away from
// under the job.
func (s *Service) busy(id string) bool { return s.running(backupJob(id)) || s.running(restoreJob(id)) }
