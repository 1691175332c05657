package service

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/index"
)

// Verify and scrub (docs/CLI.md, "Verify and scrub"): backup-verify checks
// that every chunk a backup needs exists (and with ReadData that it
// decrypts and hashes right); repo-check --sample reads a bounded share of
// a repository's chunks per run, resuming where the last run stopped. A
// chunk found missing or corrupt is recorded as lost at once (chunkLost):
// it is never offered for dedup again, its backups are marked damaged, and
// the next backup that meets the same data stores it again, which heals
// them.

// VerifyRequest is backup-verify.
type VerifyRequest struct {
	Refs     []string `json:"refs"`
	ReadData bool     `json:"read_data,omitempty"`
}

// ByteRange is a damaged range of a backup's volume.
type ByteRange struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	Chunk  string `json:"chunk"` // the lost chunk's id
}

// VerifyReport says what verifying one backup found.
type VerifyReport struct {
	BackupID      string      `json:"backup_id"`
	Chunks        int         `json:"chunks"`      // distinct chunks the backup needs
	ChunksRead    int         `json:"chunks_read"` // read, decrypted and hashed (--read-data)
	Damaged       bool        `json:"damaged"`
	DamagedRanges []ByteRange `json:"damaged_ranges"`
	Healed        bool        `json:"healed"` // was marked damaged, is whole now
	Problems      []string    `json:"problems"`
}

// VerifyBackups verifies each named backup under the shared repository
// lock. Damage is recorded (chunks lost, backups marked with the damaged
// ranges); a backup marked damaged that verifies whole is unmarked.
func (s *Service) VerifyBackups(ctx context.Context, req VerifyRequest, progress ProgressFunc) ([]VerifyReport, error) {
	var bs []*index.Backup
	err := s.cat.View(func(tx *index.Tx) error {
		for _, ref := range req.Refs {
			b, err := findBackup(tx, caller(ctx), ref)
			if err != nil {
				return err
			}
			bs = append(bs, b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []VerifyReport
	for _, b := range bs {
		if b.Status != index.StatusAvailable && b.Status != index.StatusRestoring {
			return out, errorf(ErrInvalidState, "backup %s is %s; only available backups can be verified", b.ID, b.Status)
		}
		r, err := s.repoByID(ctx, b.RepositoryID, b.AvailabilityZone)
		if err != nil {
			return out, err
		}
		rep, err := s.verifyBackup(ctx, r, b, req.ReadData, progress)
		if err != nil {
			return out, err
		}
		out = append(out, rep)
	}
	return out, nil
}

func (s *Service) verifyBackup(ctx context.Context, r *repository, b *index.Backup, readData bool, progress ProgressFunc) (VerifyReport, error) {
	rep := VerifyReport{BackupID: b.ID, DamagedRanges: []ByteRange{}, Problems: []string{}}
	lk, err := s.lock(ctx, r, false, "backup-verify "+b.ID, lockWait)
	if err != nil {
		return rep, err
	}
	defer lk.Release()
	ctx, cancel := lk.Bind(ctx)
	defer cancel()
	m, err := s.loadManifest(ctx, r, b)
	if err != nil {
		if ctx.Err() != nil {
			return rep, context.Cause(ctx)
		}
		reason := fmt.Sprintf("its manifest cannot be read: %v", err)
		rep.Damaged = true
		rep.Problems = append(rep.Problems, reason)
		rep.DamagedRanges = append(rep.DamagedRanges, ByteRange{Offset: 0, Length: b.SizeBytes})
		return rep, s.setDamaged(b.ID, reason)
	}
	// Each segment's chunks are checked (a chunk shared by segments is
	// checked in each: memory stays one segment's).
	rep.Chunks = int(m.Refs())
	bad := map[chunkstore.ID]bool{}
	packs := map[chunkstore.ID]error{} // stat result per pack
	var buf []byte
	i := 0
	err = r.store.WalkRefs(ctx, b.ID, m, 0, func(_ int64, ids []chunkstore.ID) error {
		for _, id := range ids {
			i++
			var c index.Chunk
			var found bool
			if err := s.cat.View(func(tx *index.Tx) (err error) { c, found, err = tx.Chunk(r.id, id); return err }); err != nil {
				return err
			}
			switch {
			case !found:
				bad[id] = true
				rep.Problems = append(rep.Problems, fmt.Sprintf("chunk %s is not in the catalog", id))
				continue
			case c.Lost():
				bad[id] = true
				rep.Problems = append(rep.Problems, fmt.Sprintf("chunk %s is lost (found missing or corrupt earlier)", id))
				continue
			}
			perr, seen := packs[c.Pack]
			if !seen {
				_, perr = r.store.StatPack(ctx, c.Pack)
				if len(packs) > 1<<16 {
					clear(packs) // bounded: a pack forgotten is stat-ed again
				}
				packs[c.Pack] = perr
			}
			if perr == nil && readData {
				var data []byte
				if data, perr = r.store.ReadChunk(ctx, id, c.Location, buf); perr == nil {
					buf = data
					rep.ChunksRead++
				}
			}
			if perr != nil {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				if !errors.Is(perr, repo.ErrNotFound) && !errors.Is(perr, chunkstore.ErrCorrupt) {
					return perr // an I/O error is no verdict on the data
				}
				bad[id] = true
				rep.Problems = append(rep.Problems, s.chunkLost(ctx, r, id, c.Location, perr).Error())
			}
			if i%64 == 0 {
				progress.report(Progress{Phase: "verify", Done: int64(i), Total: int64(rep.Chunks)})
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	if rep.DamagedRanges, err = damagedRanges(ctx, r.store, b.ID, m, bad); err != nil {
		return rep, err
	}
	rep.Damaged = len(bad) > 0
	reason := ""
	if rep.Damaged {
		reason = damageReason(rep.DamagedRanges)
	} else if b.Damaged {
		rep.Healed = true
	}
	if err := s.setDamaged(b.ID, reason); err != nil {
		return rep, err
	}
	if rep.Damaged {
		s.event(ctx, "backup damaged", "backup", b.ID, "reason", reason)
	} else if rep.Healed {
		s.event(ctx, "backup healed", "backup", b.ID)
	}
	return rep, nil
}

// damagedRanges is the byte ranges of m's volume held by the bad chunks,
// adjacent ones merged (each range names its first chunk), read segment
// by segment.
func damagedRanges(ctx context.Context, st *chunkstore.Store, backupID string, m *chunkstore.Manifest, bad map[chunkstore.ID]bool) ([]ByteRange, error) {
	out := []ByteRange{}
	if len(bad) == 0 {
		return out, nil
	}
	for k := range m.Segments {
		g, err := st.LoadSegment(ctx, backupID, m, k)
		if err != nil {
			return out, err
		}
		for i := g.First; i < g.First+int64(g.Len()); i++ {
			id, ok := g.Chunk(i)
			if !ok || !bad[id] {
				continue
			}
			off, n := i*int64(m.ChunkSize), int64(m.ChunkLen(i))
			if k := len(out) - 1; k >= 0 && out[k].Offset+out[k].Length == off {
				out[k].Length += n
				continue
			}
			out = append(out, ByteRange{Offset: off, Length: n, Chunk: id.String()})
		}
	}
	return out, nil
}

// damageReason is backup-show's damage_reason for damaged ranges.
func damageReason(rs []ByteRange) string {
	var parts []string
	for i, r := range rs {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("and %d more", len(rs)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%d-%d", r.Offset, r.Offset+r.Length-1))
	}
	return fmt.Sprintf("chunks missing or corrupt at bytes %s; a backup of the same data heals them (backup-verify then clears this), repo-repair --rewrite saves what is readable",
		strings.Join(parts, ", "))
}

// healDamaged unmarks the backups of r whose every chunk has a location
// again (a backup just stored a lost chunk anew), and says which.
func (s *Service) healDamaged(ctx context.Context, r *repository) []string {
	var backups []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { backups, err = tx.Backups(); return err }); err != nil {
		return nil
	}
	var healed []string
	for _, b := range backups {
		if !b.Damaged || b.RepositoryID != r.id {
			continue
		}
		m, err := s.loadManifest(ctx, r, b)
		if err != nil {
			continue
		}
		if n, _, err := s.lostIn(ctx, r, b.ID, m); err == nil && n == 0 {
			if s.setDamaged(b.ID, "") == nil {
				healed = append(healed, b.ID)
				s.event(ctx, "backup healed", "backup", b.ID)
			}
		}
	}
	sort.Strings(healed)
	return healed
}
