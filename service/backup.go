package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
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
	err = s.runBackup(ctx, r, src, b, progress)
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

// runBackup reads the volume through the pipeline, then commits manifest,
// record and references, all under the shared repository lock (chunks
// found in the catalog must stay until our references count). b is
// updated in place.
func (s *Service) runBackup(ctx context.Context, r *repository, vol *index.Volume, b *index.Backup, progress ProgressFunc) error {
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
	m, chunks, seededFrom, err := s.plan(ctx, r, src, b, cs)
	if err != nil {
		return err
	}
	stored, err := s.pipeline(ctx, r, b, src, m, chunks, progress)
	if err != nil {
		return err
	}
	if b.Consistency == "" { // a live read of a volume not in use: say what it saw
		b.Consistency, b.ConsistencyDetail = liveConsistency(before, statSource(vol.Path))
	}
	ids := m.Unique() // in encoded order: recovery replays RefsApplied against it
	if seededFrom {
		stored.dedupPacks, err = s.packsOf(r, ids, stored.locations)
		if err != nil {
			return err
		}
	}
	if err := s.verifyDedup(ctx, r, b, stored.dedupPacks); err != nil {
		return err
	}
	b.StoredBytes = stored.bytes
	b.ObjectCount = len(ids)

	data, digest := m.Encode()
	b.ManifestDigest = digest.String()
	if err := st.PutManifest(ctx, b.ID, data); err != nil {
		return err
	}
	failpoint.Hit("backup.manifest-written")
	if err := st.PutRecord(ctx, record(b, vol, cs)); err != nil {
		return err
	}
	failpoint.Hit("backup.record-written")
	if err := s.addRefs(r, b, ids, stored.locations); err != nil {
		return err
	}
	if afterRefsHook != nil {
		if err := afterRefsHook(b); err != nil {
			return err
		}
	}
	if err := lk.Check(); err != nil {
		return err
	}
	err = s.update(func(tx *index.Tx) error {
		v, err := tx.Volume(vol.ID)
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
	if err != nil {
		return err
	}
	failpoint.Hit("backup.available")
	if err := s.forgetBackupPacks(b.ID); err != nil {
		s.log.Printf("backup %s is available; forgetting its upload records failed (harmless): %v", b.ID, err)
	}
	if stored.healed > 0 { // it stored lost chunks anew: their backups may be whole again
		s.healDamaged(ctx, r)
	}
	return nil
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

// packsOf is the packs holding ids according to the catalog, leaving out
// the chunks this backup wrote itself.
func (s *Service) packsOf(r *repository, ids []chunkstore.ID, own map[chunkstore.ID]chunkstore.Location) (map[chunkstore.ID]bool, error) {
	packs := map[chunkstore.ID]bool{}
	err := s.cat.View(func(tx *index.Tx) error {
		for _, id := range ids {
			if _, mine := own[id]; mine {
				continue
			}
			c, ok, err := tx.Chunk(r.id, id)
			if err != nil {
				return err
			}
			if ok && !c.Lost() {
				packs[c.Pack] = true
			}
		}
		return nil
	})
	return packs, err
}

// verifyDedup checks that every pack holding a chunk this backup shares
// with earlier ones exists, so a backup never becomes available on top of
// a lost chunk. Entries in a missing pack are dropped (or marked lost when
// referenced) and the backup fails: the next one stores those chunks again.
func (s *Service) verifyDedup(ctx context.Context, r *repository, b *index.Backup, packs map[chunkstore.ID]bool) error {
	var missing []chunkstore.ID
	for p := range packs {
		if _, err := r.store.StatPack(ctx, p); errors.Is(err, repo.ErrNotFound) {
			missing = append(missing, p)
		} else if err != nil {
			return err
		}
	}
	if len(missing) == 0 {
		return nil
	}
	gone := map[chunkstore.ID]bool{}
	for _, p := range missing {
		gone[p] = true
	}
	var lost []chunkstore.ID
	var ids []chunkstore.ID
	err := s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(r.id, func(id chunkstore.ID, c index.Chunk) error {
			if !c.Lost() && gone[c.Pack] {
				ids = append(ids, id)
			}
			return nil
		})
	})
	for start := 0; err == nil && start < len(ids); start += index.MaxBatch {
		batch := ids[start:min(start+index.MaxBatch, len(ids))]
		err = s.update(func(tx *index.Tx) error {
			lost = lost[:0]
			for _, id := range batch {
				c, ok, err := tx.Chunk(r.id, id)
				if err != nil || !ok || c.Lost() || !gone[c.Pack] {
					if err != nil {
						return err
					}
					continue
				}
				if c.Refs == 0 {
					err = tx.DeleteChunk(r.id, id)
				} else {
					c.MarkLost()
					lost = append(lost, id)
					err = tx.PutChunk(r.id, id, c)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err == nil && len(lost) > 0 {
		err = s.markDamaged(ctx, r, lost, fmt.Sprintf("pack %s is missing from the repository", missing[0]))
	}
	if err != nil {
		return fmt.Errorf("backup %s: pack %s is missing from repository %s, and recording that failed: %w", b.ID, missing[0], r.url, err)
	}
	return fmt.Errorf("backup %s shares %d chunk(s) with earlier backups that were in pack %s (and %d more pack(s)), which is missing from repository %s: the catalog no longer offers them (the next backup stores them again) and backups that need them are marked damaged; run backup-create again, then volback repo-repair",
		b.ID, len(ids), missing[0], len(missing)-1, r.url)
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

// plan returns the manifest to fill and the chunks to read. Normally that
// is an empty manifest and every allocated chunk. For an incremental whose
// source tracks changes since the parent's snapshot (RBD diff), the
// manifest starts as the parent's (seeded is then true) and only changed
// chunks are read; chunks
// whose data was discarded since become zero without a read. How it went
// is recorded in b.ChangeTracking (a full read when the parent's snapshot
// is gone).
func (s *Service) plan(ctx context.Context, r *repository, src volume.Source, b *index.Backup, cs int) (*chunkstore.Manifest, []int64, bool, error) {
	size := src.Size()
	if ct, ok := src.(volume.ChangeTracker); ok && b.IsIncremental {
		var parent *index.Backup
		if err := s.cat.View(func(tx *index.Tx) (err error) { parent, err = tx.Backup(b.ParentID); return err }); err != nil {
			return nil, nil, false, err
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
				return nil, nil, false, fmt.Errorf("changes since snapshot %s: %w", base, err)
			default:
				pm, err := s.loadManifest(ctx, r, parent)
				if err != nil {
					return nil, nil, false, err
				}
				if pm.ChunkSize == cs {
					b.ChangeTracking = fmt.Sprintf("read only the changes since snapshot %s of parent backup %s", base, parent.ID)
					m := seeded(pm, size, cs)
					read, zero := changedChunks(changed, pm.Size, size, cs)
					for _, i := range zero {
						m.SetZero(int(i))
					}
					return m, read, true, nil
				}
				b.ChangeTracking = fmt.Sprintf("full read: parent backup %s has %d-byte chunks, this repository %d", parent.ID, pm.ChunkSize, cs)
			}
		}
	}
	extents, err := src.Allocated(ctx)
	if err != nil {
		return nil, nil, false, fmt.Errorf("listing allocated extents: %w", err)
	}
	return chunkstore.NewManifest(size, cs), allocatedChunks(extents, size, cs), false, nil
}

// seeded is a manifest of size bytes holding the parent's chunks wherever
// the parent had whole chunks.
func seeded(parent *chunkstore.Manifest, size int64, cs int) *chunkstore.Manifest {
	m := chunkstore.NewManifest(size, cs)
	for i := range min(m.Chunks(), parent.Chunks()) {
		if id, ok := parent.Chunk(i); ok && parent.ChunkLen(i) == m.ChunkLen(i) {
			m.Set(i, id)
		}
	}
	return m
}

// changedChunks lists the chunks to read for an incremental from changed
// extents: those overlapping a change, plus any chunk whose extent differs
// from the parent's (growth, a short last chunk). Chunks that lie wholly
// in extents marked Zero (discarded) and overlap no other change are
// listed apart: they become zero without a read.
func changedChunks(changed []volume.Extent, parentSize, size int64, cs int) (read, zero []int64) {
	boundary := min(parentSize, size) / int64(cs) // first chunk not whole in both
	data := []volume.Extent{{Offset: boundary * int64(cs), Length: max(size, parentSize)}}
	var zeros []volume.Extent
	for _, e := range changed {
		if !e.Zero {
			data = append(data, e)
			continue
		}
		// The chunks wholly inside e are zero; partly covered ones are read.
		first, end := (e.Offset+int64(cs)-1)/int64(cs), (e.Offset+e.Length)/int64(cs)
		if first < end {
			zeros = append(zeros, volume.Extent{Offset: first * int64(cs), Length: (end - first) * int64(cs)})
		}
		for _, edge := range []volume.Extent{{Offset: e.Offset, Length: first*int64(cs) - e.Offset}, {Offset: max(end, first) * int64(cs), Length: e.Offset + e.Length - max(end, first)*int64(cs)}} {
			if edge.Length > 0 {
				data = append(data, edge)
			}
		}
	}
	read = allocatedChunks(data, size, cs)
	isRead := make(map[int64]bool, len(read))
	for _, i := range read {
		isRead[i] = true
	}
	for _, i := range allocatedChunks(zeros, size, cs) {
		if !isRead[i] {
			zero = append(zero, i)
		}
	}
	return read, zero
}

// allocatedChunks lists the chunk indexes that overlap an allocated extent;
// every other chunk is a hole and stays a zero chunk in the manifest.
func allocatedChunks(extents []volume.Extent, size int64, cs int) []int64 {
	sort.Slice(extents, func(i, j int) bool { return extents[i].Offset < extents[j].Offset })
	var out []int64
	next := int64(0) // first chunk index not yet listed
	for _, e := range extents {
		if e.Length <= 0 || e.Offset >= size {
			continue
		}
		end := min(e.Offset+e.Length, size)
		first, last := e.Offset/int64(cs), (end-1)/int64(cs)
		for i := max(first, next); i <= last; i++ {
			out = append(out, i)
		}
		next = max(next, last+1)
	}
	return out
}

type pipelineResult struct {
	healed     int   // chunks stored again that the catalog had as lost
	bytes      int64 // stored (compressed) bytes of new chunks
	locations  map[chunkstore.ID]chunkstore.Location
	dedupPacks map[chunkstore.ID]bool // packs of the chunks found in the catalog
}

// pipeline reads the listed chunks with one reader and hashes, dedups and
// compresses them on cfg.Workers goroutines through a fixed pool of chunk
// buffers, so memory does not grow with the volume.
func (s *Service) pipeline(ctx context.Context, r *repository, b *index.Backup, src volume.Source, m *chunkstore.Manifest, chunks []int64, progress ProgressFunc) (pipelineResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st := r.store
	cs := st.Config().ChunkSize
	workers := s.cfg.Workers
	packer := st.NewPacker(ctx, chunkstore.Compression{Level: s.compressionFor(r)}, 2)
	// Each pack is recorded as it is uploaded, so that a failed backup's
	// packs can be found and removed even after a crash (a pack whose
	// record a crash lost is an orphan repo-gc removes after its grace).
	packer.OnUpload(func(p chunkstore.ID) error {
		err := s.update(func(tx *index.Tx) error { return tx.AddBackupPack(b.ID, p) })
		failpoint.Hit("backup.pack-recorded")
		return err
	})
	dedup := &packSet{m: map[chunkstore.ID]bool{}}

	// The reader fills blocks of up to readBlock bytes of consecutive
	// chunks with one pread (few syscalls, large kernel I/O); workers take
	// the chunks one by one and return a block to the pool when its last
	// chunk is done. 2 blocks per worker + 2, and one per extra reader,
	// bound the memory.
	perBlock := max(1, readBlock/cs)
	free := make(chan *block, 2*workers+1+readers(src))
	for range cap(free) {
		free <- &block{buf: make([]byte, perBlock*cs)}
	}
	jobs := make(chan chunkJob, perBlock*cap(free))
	total := int64(len(chunks)) * int64(cs)
	var done, storedBytes atomic.Int64
	var mu sync.Mutex // guards m

	go func() {
		defer close(jobs)
		if err := readChunks(ctx, src, m.Size, cs, perBlock, chunks, free, jobs); err != nil {
			cancel(err)
		}
	}()

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := s.storeChunk(st, packer, m, &mu, j.idx, j.data, &storedBytes, dedup); err != nil {
					cancel(err)
				}
				done.Add(int64(len(j.data)))
				if j.blk.pending.Add(-1) == 0 {
					free <- j.blk
				}
			}
		}()
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				progress.report(Progress{Phase: "backup", Done: done.Load(), Total: total})
			case <-stop:
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	if err := context.Cause(ctx); err != nil {
		packer.Abort()
		return pipelineResult{}, err
	}
	entries, err := packer.Close()
	if err != nil {
		return pipelineResult{}, err
	}
	progress.report(Progress{Phase: "backup", Done: total, Total: total})
	locs := make(map[chunkstore.ID]chunkstore.Location, len(entries))
	for _, e := range entries {
		locs[e.ID] = e.Location
	}
	failpoint.Hit("backup.packs-written")
	return pipelineResult{bytes: storedBytes.Load(), locations: locs, dedupPacks: dedup.m, healed: dedup.healed}, nil
}

// packSet is a set of packs shared by the pipeline's workers, and the
// count of lost chunks they stored again.
type packSet struct {
	mu     sync.Mutex
	m      map[chunkstore.ID]bool
	healed int
}

func (p *packSet) heal() {
	p.mu.Lock()
	p.healed++
	p.mu.Unlock()
}

func (p *packSet) add(id chunkstore.ID) {
	p.mu.Lock()
	p.m[id] = true
	p.mu.Unlock()
}

// readBlock is how many bytes of consecutive chunks one pread fetches.
const readBlock = 1 << 20

// block is a read buffer shared by the chunks read into it.
type block struct {
	buf     []byte
	pending atomic.Int32 // chunks not yet processed
}

type chunkJob struct {
	idx  int64
	data []byte
	blk  *block
}

// readers is how many reads of src to keep in flight: one (a disk's reads
// stay sequential), or what a source whose reads are round trips asks for.
func readers(src volume.Source) int {
	if p, ok := src.(volume.Parallel); ok {
		return max(1, p.InFlight())
	}
	return 1
}

// readChunks reads the listed chunks (sorted) in runs of consecutive ones,
// up to perBlock per pread, on readers(src) goroutines, and queues them one
// by one. The first failed read stops the others.
func readChunks(ctx context.Context, src volume.Source, size int64, cs, perBlock int, chunks []int64, free chan *block, jobs chan<- chunkJob) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var failed error
	var failOnce sync.Once
	type run struct{ i, n int } // chunks[i:i+n]
	runs := make(chan run)
	go func() {
		defer close(runs)
		for i := 0; i < len(chunks); {
			n := 1
			for n < perBlock && i+n < len(chunks) && chunks[i+n] == chunks[i]+int64(n) {
				n++
			}
			select {
			case runs <- run{i, n}:
			case <-ctx.Done():
				return
			}
			i += n
		}
	}()
	var wg sync.WaitGroup
	for range readers(src) {
		wg.Go(func() {
			for r := range runs {
				var blk *block
				select {
				case blk = <-free:
				case <-ctx.Done():
					return
				}
				off := chunks[r.i] * int64(cs)
				end := min(off+int64(r.n*cs), size)
				if _, err := src.ReadAt(blk.buf[:end-off], off); err != nil {
					free <- blk
					failOnce.Do(func() { failed = fmt.Errorf("reading volume at byte offset %d: %w", off, err) })
					cancel()
					return
				}
				blk.pending.Store(int32(r.n))
				for k := range r.n {
					lo := int64(k * cs)
					jobs <- chunkJob{idx: chunks[r.i+k], data: blk.buf[lo:min(lo+int64(cs), end-off)], blk: blk}
				}
			}
		})
	}
	wg.Wait()
	return failed
}

// storeChunk hashes one chunk, records it in the manifest and hands it to
// the packer unless it is all zeros or already stored.
func (s *Service) storeChunk(st *chunkstore.Store, p *chunkstore.Packer, m *chunkstore.Manifest, mu *sync.Mutex,
	idx int64, data []byte, stored *atomic.Int64, dedup *packSet) error {
	s.stats.read.Add(int64(len(data)))
	if chunkstore.IsZero(data) {
		s.stats.zero.Add(int64(len(data)))
		mu.Lock()
		m.SetZero(int(idx)) // an incremental's seeded chunk may have become zero
		mu.Unlock()
		return nil
	}
	id := st.ChunkID(data)
	repoID := st.Config().ID
	mu.Lock()
	added := m.Set(int(idx), id) // false: already handled (this backup, or the parent it was seeded from)
	mu.Unlock()
	if !added {
		s.stats.dedup.Add(int64(len(data)))
		return nil
	}
	var c index.Chunk
	var found bool
	if err := s.cat.View(func(tx *index.Tx) (err error) { c, found, err = tx.Chunk(repoID, id); return err }); err != nil {
		return err
	}
	if found && !c.Lost() { // a lost (damaged) chunk is never deduplicated against: it is stored again
		s.stats.dedup.Add(int64(len(data)))
		dedup.add(c.Pack)
		return nil
	}
	if found {
		dedup.heal()
	}
	n, err := p.Add(id, data)
	stored.Add(int64(n))
	s.stats.newRaw.Add(int64(len(data)))
	s.stats.stored.Add(int64(n))
	return err
}

// addRefs counts one reference per unique chunk of the manifest, in batches
// that each commit atomically with the backup's progress marker
// (RefsApplied), so a crash leaves an exactly known prefix to roll back.
func (s *Service) addRefs(r *repository, b *index.Backup, ids []chunkstore.ID, newLocs map[chunkstore.ID]chunkstore.Location) error {
	repoID := r.store.Config().ID
	for start := b.RefsApplied; start < len(ids); start += index.MaxBatch {
		end := min(start+index.MaxBatch, len(ids))
		err := s.update(func(tx *index.Tx) error {
			for _, id := range ids[start:end] {
				c, ok, err := tx.Chunk(repoID, id)
				if err != nil {
					return err
				}
				if !ok || c.Lost() {
					loc, isNew := newLocs[id]
					if !isNew {
						return fmt.Errorf("chunk %s vanished from the catalog during backup %s (found missing or corrupt meanwhile); run the backup again", id, b.ID)
					}
					c.Location = loc // a lost entry keeps its references: its backups heal
				}
				c.Refs++
				if err := tx.PutChunk(repoID, id, c); err != nil {
					return err
				}
			}
			nb := *b
			nb.RefsApplied, nb.UpdatedAt = end, now()
			return tx.PutBackup(&nb)
		})
		if err != nil {
			return fmt.Errorf("counting chunk references of backup %s: %w", b.ID, err)
		}
		b.RefsApplied = end
		failpoint.Hit("backup.refs-batch")
	}
	return nil
}

// dropRefs releases the references of ids[:b.RefsApplied], last batch first,
// committing the shrinking RefsApplied with each batch. dropUnused deletes
// entries that reach zero (imports: after a lost catalog such entries could
// be the only ones naming packs other, not yet imported, backups need).
func (s *Service) dropRefs(r *repository, b *index.Backup, ids []chunkstore.ID, dropUnused bool) error {
	repoID := r.store.Config().ID
	if b.RefsApplied > len(ids) {
		return fmt.Errorf("backup %s counts %d references but its manifest lists %d chunks", b.ID, b.RefsApplied, len(ids))
	}
	for b.RefsApplied > 0 {
		end := b.RefsApplied
		start := max(0, end-index.MaxBatch)
		err := s.update(func(tx *index.Tx) error {
			for _, id := range ids[start:end] {
				c, ok, err := tx.Chunk(repoID, id)
				if err != nil {
					return err
				}
				if !ok || c.Refs == 0 {
					return fmt.Errorf("chunk %s of backup %s has no reference to release; the catalog is inconsistent: run volback repo-repair", id, b.ID)
				}
				if c.Refs--; c.Refs == 0 && (dropUnused || c.Lost()) {
					err = tx.DeleteChunk(repoID, id)
				} else {
					err = tx.PutChunk(repoID, id, c)
				}
				if err != nil {
					return err
				}
			}
			nb := *b
			nb.RefsApplied, nb.UpdatedAt = start, now()
			return tx.PutBackup(&nb)
		})
		if err != nil {
			return fmt.Errorf("releasing chunk references of backup %s: %w", b.ID, err)
		}
		b.RefsApplied = start
		failpoint.Hit("refs.release-batch")
	}
	return nil
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
// once it is `error`.)
func (s *Service) rollbackBackup(ctx context.Context, r *repository, b *index.Backup) error {
	if b.Imported { // the objects are the imported backup's data, not ours to remove
		return s.dropImportRefs(ctx, r, b)
	}
	var m *chunkstore.Manifest
	if b.RefsApplied > 0 {
		var err error
		if m, err = s.loadManifest(ctx, r, b); err != nil {
			return err
		}
	}
	if err := r.store.DeleteRecord(ctx, b.ID); err != nil {
		return err
	}
	failpoint.Hit("rollback.record-deleted")
	if m != nil {
		if err := s.dropRefs(r, b, m.IDs, false); err != nil {
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
