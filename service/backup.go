package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
	"github.com/volback/volback/pipeline"
	"github.com/volback/volback/service/failpoint"
)

// BackupRequest is backup-create.
type BackupRequest struct {
	Volume      string `json:"volume"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Incremental bool   `json:"incremental"`
	Project     string `json:"project"`
	// Force backs up a volume in use through a snapshot taken at the start
	// (Cinder's --force); the backup is then crash-consistent.
	Force bool `json:"force,omitempty"`
	// AllowInconsistent reads a volume in use live, where no snapshot can
	// be taken; the backup records that it is not consistent.
	AllowInconsistent bool `json:"allow_inconsistent,omitempty"`
	// SnapshotID backs up that snapshot of the volume instead of the volume.
	SnapshotID string `json:"snapshot_id,omitempty"`
	// AvailabilityZone writes the backup to that zone's repository (default:
	// the volume's zone).
	AvailabilityZone string `json:"availability_zone,omitempty"`
	// Container writes the backup to the repository registered under this
	// name (Cinder's container; repo-init --name), in that repository's zone.
	Container string `json:"container,omitempty"`
}

// CreateBackup backs up a volume, or one of its snapshots. The backup is
// `available` only once every pack, its manifest, its record and its chunk
// references are durable; on any failure it ends in `error` with
// fail_reason set and holds no chunk references. A volume in use is
// refused unless Force (read through a snapshot taken now) or
// AllowInconsistent (read live, recorded as such).
func (s *Service) CreateBackup(ctx context.Context, req BackupRequest, progress ProgressFunc) (*BackupView, error) {
	var vol *index.Volume
	var from *index.Snapshot
	err := s.cat.View(func(tx *index.Tx) (err error) {
		if vol, err = findVolume(tx, caller(ctx), req.Volume); err != nil || req.SnapshotID == "" {
			return err
		}
		from, err = backupSnapshot(tx, caller(ctx), vol, req.SnapshotID)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := s.checkSource(vol); err != nil {
		return nil, err
	}
	var container *index.Repository // --container: a registered repository
	if req.Container != "" {
		if container, err = s.findRegistered(req.Container); err != nil {
			return nil, errorf(ErrUsage, "Invalid input: container %q: %v", req.Container, err)
		}
		if req.AvailabilityZone != "" && req.AvailabilityZone != container.Zone {
			return nil, errorf(ErrUsage, "container %s is in availability zone %s, not %s; give one of --container and --availability-zone", req.Container, container.Zone, req.AvailabilityZone)
		}
		req.AvailabilityZone = container.Zone
	}
	zone, err := s.zone(cmp.Or(req.AvailabilityZone, vol.AvailabilityZone))
	if err != nil {
		return nil, errorf(ErrUsage, "%v", err)
	}
	if err := s.zoneAcceptsWork(zone); err != nil {
		return nil, err
	}
	how, err := s.consistencyPlan(vol, req, from)
	if err != nil {
		return nil, err
	}
	if err := s.cat.View(func(tx *index.Tx) error { return checkBackupQuota(tx, vol.ProjectID, vol.Size) }); err != nil {
		return nil, err // before any work, a snapshot included
	}
	var r *repository
	if container != nil {
		r, err = s.openRegistered(ctx, container)
	} else if err = s.zoneReachable(ctx, zone); err == nil {
		r, err = s.repoFor(ctx, zone)
	}
	if locked(err) {
		return nil, err // a missing or wrong passphrase records nothing
	}
	if err != nil {
		return nil, s.unreachable(ctx, vol, req, zone, err)
	}
	containerName := s.containerOf(r)
	id := uuid.NewString()
	var tmp *index.Snapshot
	if how.snapshot {
		if tmp, err = s.takeBackupSnapshot(ctx, vol, id); err != nil {
			return nil, err
		}
	}
	var b *index.Backup
	s.quotaMu.Lock()
	err = s.update(func(tx *index.Tx) error {
		v, err := tx.Volume(vol.ID)
		if err != nil {
			return err
		}
		if err := volumeCanStart(v, "a backup"); err != nil {
			return err
		}
		t := now()
		b = &index.Backup{ID: id, Name: req.Name, Description: req.Description,
			Status: index.StatusCreating, VolumeID: v.ID, VolumeName: v.Name, SizeBytes: v.Size,
			AvailabilityZone: zone, Container: containerName, RepositoryID: r.store.Config().ID,
			ProjectID: v.ProjectID, CreatedAt: t, UpdatedAt: t, DataTimestamp: t,
			Consistency: how.consistency, ConsistencyDetail: how.detail}
		if req.Incremental {
			all, err := tx.Backups()
			if err != nil {
				return err
			}
			parent := latestBackup(all, v.ID, r.store.Config().ID)
			if parent == nil {
				return errorf(ErrInvalidState, "volume %s (%s) has no available backup to base an incremental on; run backup-create without --incremental first", v.ID, v.Name)
			}
			b.ParentID, b.IsIncremental = parent.ID, true
			if parent.FullyCounted() && !parent.Damaged {
				// Count against the parent (runBackup may still fall back
				// to full counting). The parent is written back unchanged
				// so that a delete of it committing meanwhile conflicts
				// with this transaction instead of missing its child.
				b.RefsBase = parent.ID
				if err := tx.PutBackup(parent); err != nil {
					return err
				}
			}
		}
		if err := reserveBackup(tx, b.ProjectID, b.SizeBytes); err != nil {
			return err
		}
		if err := claimSnapshots(tx, b, from, tmp); err != nil {
			return err
		}
		v.PrevStatus, v.Status, v.UpdatedAt = v.Status, index.StatusBackingUp, t
		vol = v
		if err := tx.PutVolume(v); err != nil {
			return err
		}
		return tx.PutBackup(b)
	})
	s.quotaMu.Unlock()
	if err != nil {
		if tmp != nil {
			volume.DeleteSnapshot(vol.Path, tmp.DriverName)
		}
		return nil, err
	}
	src := vol // what is read: the volume, or a snapshot of it
	if snap := cmp.Or(tmp, from); snap != nil {
		sv := *vol
		sv.Path = snap.Locator
		src = &sv
	}
	if from != nil {
		b.TrackingSnapshot = from.DriverName // the next incremental diffs against it while it exists
	}
	ctx, untrack := s.track(ctx, backupJob(b.ID)) // backup-delete --force cancels it
	defer untrack()
	bv := backupView(b, nil)
	Accepted(ctx, &bv)
	start := time.Now()
	s.event(ctx, "backup creating", "backup", b.ID, "volume", vol.ID, "project", b.ProjectID, "zone", b.AvailabilityZone,
		"incremental", b.IsIncremental, "consistency", b.Consistency)
	err = s.runBackup(ctx, r, src, b, tmp != nil && how.keep, progress)
	s.settleSnapshots(ctx, b, from, tmp, how.keep && err == nil)
	if err != nil {
		err = s.failBackup(ctx, r, b, err)
		s.event(ctx, "backup error", "backup", b.ID, "volume", vol.ID, "project", b.ProjectID, "duration", since(start), "reason", err.Error())
		return nil, err
	}
	s.event(ctx, "backup available", "backup", b.ID, "volume", vol.ID, "project", b.ProjectID, "duration", since(start),
		"size_bytes", b.SizeBytes, "stored_bytes", b.StoredBytes)
	return s.ShowBackup(ctx, b.ID)
}

// compressionFor is the zstd level of backups into r.
func (s *Service) compressionFor(r *repository) int {
	if r.compression != nil {
		return *r.compression
	}
	return s.cfg.CompressionLevel
}

// latestBackup is the newest available backup of a volume in a repository,
// by data_timestamp: the parent of an incremental.
func latestBackup(all []*index.Backup, volumeID, repoID string) *index.Backup {
	var best *index.Backup
	for _, o := range all {
		if o.VolumeID == volumeID && o.RepositoryID == repoID && o.Status == index.StatusAvailable &&
			(best == nil || o.DataTimestamp.After(best.DataTimestamp)) {
			best = o
		}
	}
	return best
}

// runBackup reads the volume through the backup pipeline, which stores
// new chunks and the manifest segment by segment and counts each
// segment's references as it goes; then the record and `available`. All
// under the shared repository lock: chunks found in the catalog must stay
// until our references count. b is updated in place. keeping says the
// backup keeps the snapshot it reads for change tracking: an incremental
// then prunes older ones while it runs (pruneAhead).
func (s *Service) runBackup(ctx context.Context, r *repository, vol *index.Volume, b *index.Backup, keeping bool, progress ProgressFunc) error {
	src, err := s.openSource(vol)
	if err != nil {
		return err
	}
	defer src.Close()
	b.SizeBytes = src.Size()
	before := statSource(vol.Path)

	purpose := fmt.Sprintf("backup-create %s of volume %s", b.ID, vol.Name)
	if r.store.Encrypted() { // lock objects are in clear: no volume names
		purpose = "backup-create " + b.ID
	}
	lk, err := s.lock(ctx, r, false, purpose, lockWait)
	if err != nil {
		return err
	}
	defer lk.Release()
	ctx, cancel := lk.Bind(ctx)
	defer cancel()
	st := r.store
	cs := st.Config().ChunkSize
	// Read before anything is looked up or counted: see finish.
	var epoch uint64
	if err := s.cat.View(func(tx *index.Tx) (err error) { epoch, err = tx.LossEpoch(r.id); return err }); err != nil {
		return err
	}
	p, err := s.plan(ctx, r, src, b, cs)
	if err != nil {
		return err
	}
	if keeping && p.base != "" {
		defer s.pruneAhead(ctx, b.VolumeID, p.base)()
	}
	defer backupRunning()()
	base := s.refsBase(b, p)
	bc := s.backupCatalog(r, b)
	defer bc.Close()
	res, err := pipeline.Backup(ctx, pipeline.BackupInput{
		Store: st, Catalog: bc, BackupID: b.ID, Source: src, Size: b.SizeBytes,
		Read: p.read, Zero: p.zero, Parent: p.parent, Known: p.known, Base: base,
		Compression: chunkstore.Compression{Level: s.compressionFor(r)},
		Hashers:     s.cfg.Workers, Readers: readers(src), Budget: s.budget,
		// Each pack is recorded as it is uploaded, so that a failed
		// backup's packs can be found and removed even after a crash (a
		// pack whose record a crash lost is an orphan repo-gc removes
		// after its grace).
		OnUpload: func(p chunkstore.ID) error {
			err := s.update(func(tx *index.Tx) error { return tx.AddBackupPack(b.ID, p) })
			failpoint.Hit("backup.pack-recorded")
			return err
		},
		Progress: func(done, total int64) { progress.report(Progress{Phase: "backup", Done: done, Total: total}) },
		Counters: &pipeline.Counters{Read: &s.stats.read, Zero: &s.stats.zero, Dedup: &s.stats.dedup,
			New: &s.stats.newRaw, Stored: &s.stats.stored},
	})
	if err != nil {
		return err
	}
	failpoint.Hit("backup.manifest-written")
	if b.Consistency == "" { // a live read of a volume not in use: say what it saw
		b.Consistency, b.ConsistencyDetail = liveConsistency(before, statSource(vol.Path))
	}
	b.StoredBytes = res.Stored
	b.ObjectCount = int(res.Refs)
	b.ManifestDigest = res.Digest.String()
	b.RefsApplied = int(res.Counted) // what the pipeline committed
	b.RefsTotal = int(res.Counted)
	if err := st.PutRecord(ctx, record(b, vol, cs)); err != nil {
		return err
	}
	failpoint.Hit("backup.record-written")
	if afterRefsHook != nil {
		if err := afterRefsHook(b); err != nil {
			return err
		}
	}
	if err := lk.Check(); err != nil {
		return err
	}
	err = s.finish(ctx, r, b, vol.ID, res.Manifest, epoch)
	if err != nil {
		return err
	}
	failpoint.Hit("backup.available")
	if err := s.forgetBackupPacks(b.ID); err != nil {
		s.log.Printf("backup %s is available; forgetting its upload records failed (harmless): %v", b.ID, err)
	}
	if bc.healed.Load() > 0 { // it stored lost chunks anew: their backups may be whole again
		s.healDamaged(ctx, r)
	}
	return nil
}

// refsBase is the manifest b counts its references against, or nil (then
// b.RefsBase is cleared: b counts in full). Decided before anything is
// counted: the first counted batch records the mode with the prefix.
// The base is b's parent, chosen fully counted when b was recorded (its
// delete is refused from then on); a parent damaged since is not used,
// as the chunks b shares with it would not be looked up.
func (s *Service) refsBase(b *index.Backup, p backupPlan) *pipeline.Parent {
	var base *pipeline.Parent
	for _, c := range []*pipeline.Parent{p.parent, p.known} {
		if c != nil && b.RefsBase != "" && c.BackupID == b.RefsBase {
			base = c
		}
	}
	if base != nil {
		var parent *index.Backup
		err := s.cat.View(func(tx *index.Tx) (err error) { parent, err = tx.Backup(base.BackupID); return err })
		if err != nil || parent.Damaged || !parent.FullyCounted() {
			base = nil
		}
	}
	if base == nil {
		b.RefsBase = ""
	}
	return base
}

// finish makes b available, and its volume what it was before. A chunk
// found lost while b ran was marked lost in the catalog, but the backups
// that need it are marked damaged only if they have a manifest, which b
// had not: so b's chunks are checked first, and b fails if it needs a
// lost one, when the repository's loss epoch moved since b read it
// (epoch: a loss after b looked a chunk up or counted it), or when
// markDamaged flagged b (CheckLost: a loss before b started whose damage
// marks came after, so that b trusted its parent's chunks). Reading both
// in the same transaction makes a loss or flag that commits meanwhile
// conflict with it; one after it finds b's manifest.
func (s *Service) finish(ctx context.Context, r *repository, b *index.Backup, volumeID string, m *chunkstore.Manifest, epoch uint64) error {
	for range 5 {
		var seen uint64
		var check bool
		err := s.update(func(tx *index.Tx) error {
			var err error
			if seen, err = tx.LossEpoch(r.id); err != nil {
				return err
			}
			cur, err := tx.Backup(b.ID)
			if err != nil {
				return err
			}
			if check = seen != epoch || cur.CheckLost; check {
				if !cur.CheckLost {
					return nil
				}
				cur.CheckLost = false // a flag set after this is a new loss
				return tx.PutBackup(cur)
			}
			v, err := tx.Volume(volumeID)
			if err == nil {
				v.Status, v.PrevStatus, v.Size, v.UpdatedAt = v.PrevStatus, "", b.SizeBytes, now()
				if v.Status == "" {
					v.Status = index.StatusAvailable
				}
				if err := tx.PutVolume(v); err != nil {
					return err
				}
			} else if !errors.Is(err, index.ErrNotFound) {
				return err
			}
			b.Status, b.UpdatedAt = index.StatusAvailable, now()
			return tx.PutBackup(b)
		})
		if err != nil || !check {
			return err
		}
		if err := s.needsNoLost(ctx, r, b, m); err != nil {
			return err
		}
		epoch = seen
	}
	return fmt.Errorf("backup %s: chunks of repository %s kept being found missing or corrupt while it completed; run volback repo-check, then backup-create again", b.ID, r.url)
}

// needsNoLost fails when b's manifest m lists a chunk whose catalog entry
// is lost (or gone).
func (s *Service) needsNoLost(ctx context.Context, r *repository, b *index.Backup, m *chunkstore.Manifest) error {
	n, first, err := s.lostIn(ctx, r, b.ID, m)
	if err != nil || n == 0 {
		return err
	}
	return fmt.Errorf("backup %s needs %d chunk(s) found missing or corrupt while the backup ran (first: %s; the catalog records them as lost); run backup-create again: the next backup stores them anew, which also heals the backups marked damaged", b.ID, n, first)
}

// afterRefsHook lets tests fail a backup once its references count.
var afterRefsHook func(*index.Backup) error

// forgetBackupPacks drops the upload records of a backup that completed:
// its packs are referenced now.
func (s *Service) forgetBackupPacks(backupID string) error {
	var packs []chunkstore.ID
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.BackupPacks(backupID, func(_ string, p chunkstore.ID) error { packs = append(packs, p); return nil })
	})
	for start := 0; err == nil && start < len(packs); start += index.MaxBatch {
		batch := packs[start:min(start+index.MaxBatch, len(packs))]
		err = s.update(func(tx *index.Tx) error {
			for _, p := range batch {
				if err := tx.DeleteBackupPack(backupID, p); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return err
}

// record is the repository's copy of a backup record.
func record(b *index.Backup, vol *index.Volume, chunkSize int) *chunkstore.Record {
	return &chunkstore.Record{FormatVersion: chunkstore.RecordVersion, ID: b.ID, Name: b.Name, Description: b.Description,
		VolumeID: b.VolumeID, VolumeName: b.VolumeName, VolumeSizeBytes: vol.Size, ParentID: b.ParentID,
		SnapshotID: b.SnapshotID, IsIncremental: b.IsIncremental, SizeBytes: b.SizeBytes,
		ObjectCount: b.ObjectCount, StoredBytes: b.StoredBytes, AvailabilityZone: b.AvailabilityZone,
		Container: b.Container, ProjectID: b.ProjectID, CreatedAt: b.CreatedAt, DataTimestamp: b.DataTimestamp,
		RepositoryID: b.RepositoryID, ChunkSize: chunkSize, ManifestDigest: b.ManifestDigest, Consistency: b.Consistency,
		ConsistencyDetail: b.ConsistencyDetail}
}

// backupPlan is what a backup reads: chunk ranges to read and to zero,
// and the parent whose chunks the rest keep (nil: the rest are zeros).
type backupPlan struct {
	read, zero []pipeline.Range
	parent     *pipeline.Parent
	base       string           // the snapshot whose changes are read ("": a full read)
	known      *pipeline.Parent // an incremental's parent when everything is read (pipeline.BackupInput.Known)
}

// plan says what to read. Normally that is every allocated chunk, the
// rest zeros. For an incremental whose source tracks changes since the
// parent's snapshot (RBD diff), the manifest starts as the parent's and
// only changed chunks are read; chunks whose data was discarded since
// become zero without a read. How it went is recorded in
// b.ChangeTracking (a full read when the parent's snapshot is gone).
func (s *Service) plan(ctx context.Context, r *repository, src volume.Source, b *index.Backup, cs int) (backupPlan, error) {
	size := src.Size()
	if ct, ok := src.(volume.ChangeTracker); ok && b.IsIncremental {
		var parent *index.Backup
		if err := s.cat.View(func(tx *index.Tx) (err error) { parent, err = tx.Backup(b.ParentID); return err }); err != nil {
			return backupPlan{}, err
		}
		// The snapshot the parent's data equals: its own kept one, or the
		// one it was read from (--snapshot-id).
		base := cmp.Or(parent.TrackingSnapshot, s.driverSnapshot(parent.SnapshotID))
		b.ChangeTracking = fmt.Sprintf("full read: parent backup %s left no snapshot to diff against", parent.ID)
		if base != "" {
			changed, err := ct.Changed(ctx, base)
			switch {
			case errors.Is(err, volume.ErrNotFound):
				b.ChangeTracking = fmt.Sprintf("full read: snapshot %s of parent backup %s no longer exists", base, parent.ID)
			case errors.Is(err, volume.ErrNotSupported):
				b.ChangeTracking = fmt.Sprintf("full read: the volume cannot report changes since snapshot %s (%v)", base, err)
			case err != nil:
				return backupPlan{}, fmt.Errorf("changes since snapshot %s: %w", base, err)
			default:
				pm, err := s.loadManifest(ctx, r, parent)
				if err != nil {
					return backupPlan{}, err
				}
				if pm.ChunkSize == cs {
					b.ChangeTracking = fmt.Sprintf("read only the changes since snapshot %s of parent backup %s", base, parent.ID)
					read, zero := changedChunks(changed, pm.Size, size, cs)
					return backupPlan{read: read, zero: zero,
						parent: &pipeline.Parent{BackupID: parent.ID, Manifest: pm}, base: base}, nil
				}
				b.ChangeTracking = fmt.Sprintf("full read: parent backup %s has %d-byte chunks, this repository %d", parent.ID, pm.ChunkSize, cs)
			}
		}
	}
	extents, err := src.Allocated(ctx)
	if err != nil {
		return backupPlan{}, fmt.Errorf("listing allocated extents: %w", err)
	}
	p := backupPlan{read: pipeline.Ranges(extents, size, cs)}
	if b.IsIncremental {
		p.known = s.knownParent(ctx, r, b.ParentID, cs)
	}
	return p, nil
}

// knownParent is an incremental's parent for a full read to skip the
// catalog lookups of chunks it holds at the same index, or nil when it
// cannot serve: damaged (a lost chunk must be looked up to be stored
// again), other chunks, or its manifest unreadable (then every chunk is
// looked up, as for a full backup).
func (s *Service) knownParent(ctx context.Context, r *repository, parentID string, cs int) *pipeline.Parent {
	var parent *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { parent, err = tx.Backup(parentID); return err }); err != nil || parent.Damaged {
		return nil
	}
	pm, err := s.loadManifest(ctx, r, parent)
	if err != nil || pm.ChunkSize != cs {
		return nil
	}
	return &pipeline.Parent{BackupID: parent.ID, Manifest: pm}
}

// changedChunks lists the chunks to read for an incremental from changed
// extents: those overlapping a change, plus any chunk whose extent differs
// from the parent's (growth, a short last chunk). Chunks that lie wholly
// in extents marked Zero (discarded) and overlap no other change are
// listed apart: they become zero without a read.
func changedChunks(changed []volume.Extent, parentSize, size int64, cs int) (read, zero []pipeline.Range) {
	boundary := min(parentSize, size) / int64(cs) // first chunk not whole in both
	data := []volume.Extent{{Offset: boundary * int64(cs), Length: max(size, parentSize)}}
	var zeros []volume.Extent
	for _, e := range changed {
		if e.Zero {
			zeros = append(zeros, e)
		} else {
			data = append(data, e)
		}
	}
	// A chunk partly inside a discarded extent is read: its other part
	// may hold data.
	whole := pipeline.WholeRanges(zeros, size, cs)
	partly := pipeline.Subtract(pipeline.Ranges(zeros, size, cs), whole)
	for _, r := range partly {
		data = append(data, volume.Extent{Offset: r.First * int64(cs), Length: (r.End - r.First) * int64(cs)})
	}
	read = pipeline.Ranges(data, size, cs)
	return read, pipeline.Subtract(whole, read)
}

// readers is how many reads of src to keep in flight: one (a disk's reads
// stay sequential, the kernel reading ahead), or what a source whose reads
// are round trips (RBD) or wait for the disk (O_DIRECT) asks for.
func readers(src volume.Source) int {
	if p, ok := src.(volume.Parallel); ok {
		return max(1, p.InFlight())
	}
	return 1
}

// failBackup undoes what a failed backup left (record, references,
// manifest, then its packs once nobody can need them), marks it `error`
// with the reason and gives the volume its status back. A rollback that
// fails half-way keeps the backup `creating` and is retried in the
// background until it completes. It returns the error to show the user.
func (s *Service) failBackup(ctx context.Context, r *repository, b *index.Backup, cause error) error {
	reason := cause.Error()
	if cancelled(cause) {
		reason = "cancelled by the user" // the CLI's words for it too
	}
	ctx = context.WithoutCancel(ctx)
	rolled := true
	if err := s.rollbackBackup(ctx, r, b); err != nil {
		s.log.Printf("backup %s: rolling back: %v (retrying in the background)", b.ID, err)
		reason += "; rollback incomplete (" + err.Error() + "), being retried"
		rolled = false
	}
	err := s.update(func(tx *index.Tx) error {
		if v, err := tx.Volume(b.VolumeID); err == nil && v.Status == index.StatusBackingUp {
			v.Status, v.PrevStatus, v.UpdatedAt = v.PrevStatus, "", now()
			if v.Status == "" {
				v.Status = index.StatusAvailable
			}
			if err := tx.PutVolume(v); err != nil {
				return err
			}
		}
		cur, err := tx.Backup(b.ID)
		if err != nil {
			return err
		}
		if rolled {
			cur.Status = index.StatusError
		}
		cur.FailReason, cur.UpdatedAt = reason, now()
		return tx.PutBackup(cur)
	})
	if err != nil {
		s.log.Printf("backup %s: recording failure: %v", b.ID, err)
	}
	if rolled {
		s.sweep(ctx, r)
	} else {
		s.retryRollback(r, b.ID)
	}
	return fmt.Errorf("backup %s of volume %s failed: %w", b.ID, b.VolumeName, cause)
}

// rollbackBackup removes the record of an unfinished backup, releases its
// counted references, then removes its manifest. (Its packs go in a sweep
// once it is `error`.) The references are found through the manifest's
// head, or without one (the backup stopped before writing it) in the
// segments stored so far, which are always a prefix.
func (s *Service) rollbackBackup(ctx context.Context, r *repository, b *index.Backup) error {
	if b.Imported { // the objects are the imported backup's data, not ours to remove
		return s.dropImportRefs(ctx, r, b)
	}
	var m *chunkstore.Manifest
	if b.RefsApplied > 0 {
		var err error
		if m, err = s.loadManifest(ctx, r, b); errors.Is(err, repo.ErrNotFound) {
			m = nil // no head yet: walk the segments
		} else if err != nil {
			return err
		}
	}
	if err := r.store.DeleteRecord(ctx, b.ID); err != nil {
		return err
	}
	failpoint.Hit("rollback.record-deleted")
	if b.RefsApplied > 0 {
		if err := s.releaseRefs(ctx, r, b, m, false); err != nil {
			return err
		}
	}
	return r.store.DeleteManifest(ctx, b.ID)
}

// rollbackRetry is the first pause between background rollback attempts;
// it doubles up to a minute.
var rollbackRetry = 2 * time.Second

// retryRollback finishes an interrupted rollback in the background, so a
// long-lived owner (serve, mount) does not leave the backup `creating`
// until it restarts.
func (s *Service) retryRollback(r *repository, id string) {
	s.bg.Add(1)
	// A job like the backup was: backup-delete --force cancels it (and then
	// deletes the backup itself), and nothing else may take it meanwhile.
	ctx, untrack := s.track(s.bgCtx, backupJob(id))
	go func() {
		defer s.bg.Done()
		defer untrack()
		wait := rollbackRetry
		for {
			select {
			case <-ctx.Done():
				return // cancelled, or the next start's recovery takes over
			case <-time.After(wait):
			}
			var b *index.Backup
			err := s.cat.View(func(tx *index.Tx) (err error) { b, err = tx.Backup(id); return err })
			if err != nil || b.Status != index.StatusCreating {
				return
			}
			if err := s.rollbackBackup(ctx, r, b); err != nil {
				s.log.Printf("backup %s: rolling back (retry): %v", id, err)
				wait = min(2*wait, time.Minute)
				continue
			}
			err = s.update(func(tx *index.Tx) error {
				cur, err := tx.Backup(id)
				if err != nil {
					return err
				}
				if b.Imported {
					return tx.DeleteBackup(id)
				}
				cur.Status, cur.UpdatedAt = index.StatusError, now()
				return tx.PutBackup(cur)
			})
			if err != nil {
				s.log.Printf("backup %s: recording the finished rollback: %v", id, err)
				continue
			}
			s.sweep(ctx, r)
			return
		}
	}()
}
