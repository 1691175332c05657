package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
	"github.com/volback/volback/pipeline"
)

// RestoreRequest is backup-restore (and create --backup-id).
type RestoreRequest struct {
	Backup           string `json:"backup"`
	Volume           string `json:"volume"` // existing volume to overwrite; empty = new volume
	Name             string `json:"name"`   // name of the new volume
	Path             string `json:"path"`
	Size             int64  `json:"size_bytes"`
	AvailabilityZone string `json:"availability_zone"`
	Project          string `json:"project"`
}

// Restore writes a backup to a new volume or over an existing one that is
// at least as large, holding the shared repository lock throughout (no
// pack it reads can go meanwhile). The backup and the volume are checked
// and claimed in one transaction. On failure the volume ends
// `error_restoring` and the backup is `available` again, as in Cinder.
func (s *Service) Restore(ctx context.Context, req RestoreRequest, progress ProgressFunc) (*RestoreView, error) {
	if err := requirePathAdmin(ctx, req.Path); err != nil {
		return nil, err
	}
	var b *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { b, err = findBackup(tx, caller(ctx), req.Backup); return err }); err != nil {
		return nil, err
	}
	if err := restorable(b); err != nil {
		return nil, err
	}
	if err := s.zoneAcceptsWork(cmp.Or(b.AvailabilityZone, s.cfg.DefaultZone)); err != nil {
		return nil, err
	}
	r, err := s.repoByID(ctx, b.RepositoryID, b.AvailabilityZone)
	if err != nil {
		return nil, err
	}
	lk, err := s.lock(ctx, r, false, "backup-restore "+b.ID, lockWait)
	if err != nil {
		return nil, err
	}
	defer lk.Release()
	ctx, cancel := lk.Bind(ctx)
	defer cancel()
	m, err := s.loadManifest(ctx, r, b)
	if err != nil {
		return nil, err
	}

	claim := func(tx *index.Tx) error { return claimBackup(tx, b.ID) }
	var vol *index.Volume
	var tgt volume.Target
	if req.Volume != "" {
		if vol, tgt, err = s.claimTarget(ctx, req.Volume, b, claim); err != nil {
			return nil, err
		}
	} else {
		if req.Size != 0 && req.Size < b.SizeBytes {
			return nil, errorf(ErrUsage, "size %d bytes is smaller than backup %s (%d bytes); give at least the backup's size, or 0 to take it", req.Size, b.ID, b.SizeBytes)
		}
		name := req.Name
		if name == "" {
			name = "restore_backup_" + b.ID
		}
		az := req.AvailabilityZone
		if az == "" {
			az = b.AvailabilityZone
		}
		// Whole sectors: a backup made before volumes had to be (an odd-sized
		// file) restores into a volume rounded up, its tail zeros.
		size := volume.RoundUp(max(req.Size, b.SizeBytes))
		proj, err := actingProject(ctx, req.Project)
		if err != nil {
			return nil, err
		}
		if vol, tgt, err = s.newVolume(name, req.Path, az, proj, size, index.StatusRestoringBackup, claim); err != nil {
			return nil, err
		}
	}
	ctx, untrack := s.track(ctx, restoreJob(b.ID)) // backup-reset-state cancels it
	defer untrack()
	Accepted(ctx, &RestoreView{BackupID: b.ID, VolumeID: vol.ID, VolumeName: vol.Name})
	start := time.Now()
	s.event(ctx, "restore started", "backup", b.ID, "volume", vol.ID, "project", vol.ProjectID)
	err = s.writeImage(ctx, r, b, m, tgt, progress)
	if cerr := tgt.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing volume %s: %w", vol.Path, cerr)
	}
	if err != nil && errors.Is(context.Cause(ctx), errResetState) {
		if err := s.endCancelledRestore(vol.ID, b.ID, time.Now()); err != nil {
			return nil, err
		}
		s.event(ctx, "restore cancelled", "backup", b.ID, "volume", vol.ID, "project", vol.ProjectID, "duration", since(start))
		return nil, fmt.Errorf("restore of backup %s to volume %s was cancelled by backup-reset-state; the volume is available with incomplete content", b.ID, vol.ID)
	}
	if err != nil {
		s.endRestore(vol.ID, b.ID, index.StatusErrorRestoring)
		s.event(ctx, "restore error", "backup", b.ID, "volume", vol.ID, "project", vol.ProjectID, "duration", since(start), "reason", err.Error())
		return nil, fmt.Errorf("restore of backup %s to volume %s failed: %w", b.ID, vol.ID, err)
	}
	if err := s.endRestore(vol.ID, b.ID, index.StatusAvailable); err != nil {
		return nil, err
	}
	s.event(ctx, "restore done", "backup", b.ID, "volume", vol.ID, "project", vol.ProjectID, "duration", since(start))
	return &RestoreView{BackupID: b.ID, VolumeID: vol.ID, VolumeName: vol.Name}, nil
}

// restorable says why b cannot be restored now.
func restorable(b *index.Backup) error {
	if b.Status != index.StatusAvailable {
		return errorf(ErrInvalidState, "backup %s is %s; only available backups can be restored", b.ID, b.Status)
	}
	if b.MissingParent {
		return errorf(ErrInvalidState, "backup %s is an incremental of backup %s, which is not in the catalog; import backup %s first (volback backup-import), then restore",
			b.ID, b.ParentID, b.ParentID)
	}
	return nil
}

// claimBackup checks backup id can be restored and marks it restoring, in
// the caller's transaction.
func claimBackup(tx *index.Tx, id string) error {
	b, err := tx.Backup(id)
	if err != nil {
		return err
	}
	if err := restorable(b); err != nil {
		return err
	}
	b.Status, b.UpdatedAt = index.StatusRestoring, now()
	return tx.PutBackup(b)
}

// claimTarget opens an existing volume to take the backup, then checks and
// marks it restoring-backup (and runs claim) in one transaction, so two
// restores (or a restore and a backup) can never both have it.
func (s *Service) claimTarget(ctx context.Context, ref string, b *index.Backup, claim func(*index.Tx) error) (*index.Volume, volume.Target, error) {
	var vol *index.Volume
	check := func(v *index.Volume) error {
		if v.Status != index.StatusAvailable && v.Status != index.StatusErrorRestoring && v.Status != index.StatusError {
			return errorf(ErrInvalidState, "volume %s (%s) is %s; it must be available to restore into", v.ID, v.Name, v.Status)
		}
		if v.Placeholder || v.Path == "" {
			return errorf(ErrInvalidState, "volume %s (%s) was rebuilt from a backup record and has no known source; restore to a new volume instead (omit --volume)", v.ID, v.Name)
		}
		if v.Size < b.SizeBytes {
			return errorf(ErrInvalidState, "volume %s (%s) has %d bytes, smaller than backup %s (%d bytes); restore to a new volume or a larger one", v.ID, v.Name, v.Size, b.ID, b.SizeBytes)
		}
		return nil
	}
	err := s.cat.View(func(tx *index.Tx) error {
		v, err := findVolume(tx, caller(ctx), ref)
		if err == nil {
			err = check(v)
		}
		vol = v
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	tgt, err := volume.OpenTarget(vol.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("restore into volume %s (%s): %w", vol.ID, vol.Name, err)
	}
	if tgt.Size() < b.SizeBytes {
		tgt.Close()
		return nil, nil, errorf(ErrInvalidState, "volume %s (%s) at %s has %d bytes, smaller than backup %s (%d bytes); restore to a new volume or a larger one", vol.ID, vol.Name, vol.Path, tgt.Size(), b.ID, b.SizeBytes)
	}
	err = s.update(func(tx *index.Tx) error {
		v, err := tx.Volume(vol.ID)
		if err != nil {
			return err
		}
		if err := check(v); err != nil {
			return err
		}
		if err := claim(tx); err != nil {
			return err
		}
		v.Status, v.UpdatedAt = index.StatusRestoringBackup, now()
		vol = v
		return tx.PutVolume(v)
	})
	if err != nil {
		tgt.Close()
		return nil, nil, err
	}
	return vol, tgt, nil
}

func (s *Service) setBackupStatus(id, status string) error {
	return s.update(func(tx *index.Tx) error {
		b, err := tx.Backup(id)
		if err != nil {
			return err
		}
		b.Status, b.UpdatedAt = status, now()
		return tx.PutBackup(b)
	})
}

// endRestore sets the volume's final status and makes the backup available.
func (s *Service) endRestore(volID, backupID, volStatus string) error {
	return s.update(func(tx *index.Tx) error {
		if v, err := tx.Volume(volID); err == nil {
			v.Status, v.UpdatedAt = volStatus, now()
			if volStatus == index.StatusAvailable {
				v.Incomplete = "" // a whole backup is in it now
			}
			if err := tx.PutVolume(v); err != nil {
				return err
			}
		}
		if b, err := tx.Backup(backupID); err == nil && b.Status == index.StatusRestoring {
			b.Status, b.UpdatedAt = index.StatusAvailable, now()
			return tx.PutBackup(b)
		}
		return nil
	})
}

// catalogLocator finds chunks through the catalog. For readers that hold
// no repository lock (mounts), Relocate looks again after a miss: a GC in
// this process already updated the catalog; one of another home is caught
// up with under the shared lock. What is nowhere is recorded as lost.
type catalogLocator struct {
	s *Service
	r *repository
}

func (l *catalogLocator) Locate(ctx context.Context, id chunkstore.ID) (chunkstore.Location, error) {
	var c index.Chunk
	var ok bool
	err := l.s.cat.View(func(tx *index.Tx) (err error) { c, ok, err = tx.Chunk(l.r.id, id); return err })
	if err != nil {
		return chunkstore.Location{}, err
	}
	if !ok || c.Lost() {
		return chunkstore.Location{}, fmt.Errorf("chunk %s is lost (not in the catalog, or found missing or corrupt before): the backup is damaged; run volback repo-repair", id)
	}
	return c.Location, nil
}

// LocateSegment locates a segment's chunks in one transaction. A lost
// chunk gets a zero location: reading it fails and Relocate tells why.
func (l *catalogLocator) LocateSegment(_ context.Context, g *chunkstore.Segment) ([]chunkstore.Location, error) {
	locs := make([]chunkstore.Location, len(g.IDs))
	err := l.s.cat.View(func(tx *index.Tx) error {
		return tx.ChunksOf(l.r.id, g.IDs, func(k int, c index.Chunk, ok bool) error {
			if ok && !c.Lost() {
				locs[k] = c.Location
			}
			return nil
		})
	})
	return locs, err
}

// Relocate is called after a read at old failed; the failure itself is
// judged again under the lock, so cause only explains the call.
func (l *catalogLocator) Relocate(ctx context.Context, id chunkstore.ID, old chunkstore.Location, _ error) (chunkstore.Location, error) {
	if loc, err := l.Locate(ctx, id); err != nil || loc != old {
		return loc, err
	}
	lk, err := l.s.lock(ctx, l.r, false, "mount read of chunk "+id.String(), time.Minute)
	if err != nil {
		return chunkstore.Location{}, err
	}
	defer lk.Release()
	if loc, err := l.Locate(ctx, id); err != nil || loc != old {
		return loc, err
	}
	_, err = l.r.store.ReadChunk(ctx, id, old, nil)
	if err == nil {
		return old, nil // it was a passing failure
	}
	return chunkstore.Location{}, l.s.chunkLost(ctx, l.r, id, old, err)
}

// writeImage writes every chunk of m to tgt through the restore
// pipeline, verifying each chunk's hash, then syncs tgt. Zero chunks are
// skipped on a fresh target and zeroed (hole-punched) in runs on an
// existing one. A chunk that reads back missing or corrupt is recorded as
// lost (under the shared lock no GC moved it).
func (s *Service) writeImage(ctx context.Context, r *repository, b *index.Backup, m *chunkstore.Manifest, tgt volume.Target, progress ProgressFunc) error {
	var t pipeline.Target = tgt
	if restoreDelay > 0 {
		t = slowTarget{tgt}
	}
	return pipeline.Restore(ctx, pipeline.RestoreInput{
		Store: r.store, BackupID: b.ID, Manifest: m, Locator: &catalogLocator{s: s, r: r},
		Lost: func(ctx context.Context, id chunkstore.ID, loc chunkstore.Location, cause error) error {
			return s.chunkLost(ctx, r, id, loc, cause)
		},
		Target: t, Decoders: s.cfg.Workers, Writers: writers(tgt), Budget: s.budget,
		Progress: func(done, total int64) { progress.report(Progress{Phase: "restore", Done: done, Total: total}) },
		Written:  &s.stats.restored,
	})
}

// writers is how many writes of tgt to keep in flight: the pipeline's
// default of one (buffered writes to a file serialize anyway), or what a
// target whose writes wait for a round trip or the disk asks for (RBD, a
// file written with O_DIRECT).
func writers(tgt volume.Target) int {
	if p, ok := tgt.(volume.Parallel); ok {
		return p.InFlight() // 0: the default
	}
	return 0
}

// restoreDelay slows each chunk written, so tests can act mid-restore.
var restoreDelay time.Duration

type slowTarget struct{ volume.Target }

func (t slowTarget) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(restoreDelay)
	return t.Target.WriteAt(p, off)
}
