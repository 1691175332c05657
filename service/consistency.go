package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// How a backup was made consistent (backup-show's consistency and
// consistency_detail).
const (
	// ConsistencyCrash: read from a snapshot, so the backup is the volume
	// as of one moment, as after a power cut.
	ConsistencyCrash = "crash-consistent"
	// ConsistencyLiveInUse: read live while something held the volume
	// (--allow-inconsistent): not consistent.
	ConsistencyLiveInUse = "inconsistent-live-read"
)

// backupHow is how a backup will read its volume.
type backupHow struct {
	snapshot    bool // take a snapshot at the start and read it
	keep        bool // keep that snapshot: it is the base of the next incremental's change tracking
	consistency string
	detail      string
}

// consistencyPlan decides how to read vol, refusing a volume in use
// without Force or AllowInconsistent with Cinder's hint.
func (s *Service) consistencyPlan(vol *index.Volume, req BackupRequest, from *index.Snapshot) (backupHow, error) {
	if from != nil {
		return backupHow{consistency: ConsistencyCrash,
			detail: fmt.Sprintf("read from snapshot %s (%s) taken at %s", from.ID, from.Method, from.CreatedAt.Format("2006-01-02T15:04:05Z"))}, nil
	}
	u := usageOf(vol)
	inUse := u.InUse || vol.Status == index.StatusInUse
	switch {
	case req.Force:
		how := backupHow{snapshot: true, consistency: ConsistencyCrash}
		how.keep = s.tracksChanges(vol)
		how.detail = "read from a snapshot taken at the start of the backup, deleted after it"
		if how.keep {
			how.detail = "read from a snapshot taken at the start of the backup, kept as the base of the next incremental's change tracking"
		}
		return how, nil
	case inUse && req.AllowInconsistent:
		return backupHow{consistency: ConsistencyLiveInUse,
			detail: "read live while the volume was in use (" + u.Reason + "), without a snapshot (--allow-inconsistent): not crash-consistent"}, nil
	case inUse:
		reason := u.Reason
		if reason == "" {
			reason = "its status is in-use"
		}
		return backupHow{}, errorf(ErrInvalidState, "Invalid volume: Backing up an in-use volume must use the force flag. Volume %s (%s) is %s; pass --force to back it up through a snapshot, or %s first",
			vol.ID, vol.Name, reason, cmpOr(u.Fix, "free it"))
	case s.tracksChanges(vol):
		// Every backup of a change-tracking volume (RBD) reads a snapshot
		// and leaves it, so the next incremental reads only the changes.
		return backupHow{snapshot: true, keep: true, consistency: ConsistencyCrash,
			detail: "read from a snapshot taken at the start of the backup, kept as the base of the next incremental's change tracking"}, nil
	}
	return backupHow{}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// tracksChanges reports whether vol's driver reports changes since a
// snapshot (RBD), which makes a backup's snapshot worth keeping.
func (s *Service) tracksChanges(vol *index.Volume) bool {
	src, err := s.openSource(vol)
	if err != nil {
		return false
	}
	defer src.Close()
	_, ok := src.(volume.ChangeTracker)
	return ok
}

// takeBackupSnapshot snapshots vol for backup id. A volume whose driver
// cannot snapshot it is refused with the reason and the way out.
func (s *Service) takeBackupSnapshot(ctx context.Context, vol *index.Volume, id string) (*index.Snapshot, error) {
	t := now()
	sn := &index.Snapshot{ID: id, Name: "backup-" + id, VolumeID: vol.ID, Status: index.StatusBackingUp,
		ProjectID: vol.ProjectID, BackupID: id, DriverName: trackingSnapshotName(id), CreatedAt: t, UpdatedAt: t}
	ds, err := volume.TakeSnapshot(ctx, vol.Path, sn.DriverName)
	if errors.Is(err, volume.ErrNotSupported) {
		return nil, errorf(ErrInvalidState, "volume %s (%s) cannot be backed up through a snapshot (--force): %v; to read it live anyway, pass --allow-inconsistent instead (the backup then records that it is not consistent)",
			vol.ID, vol.Name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot of volume %s (%s) for backup %s: %w", vol.ID, vol.Name, id, err)
	}
	sn.Locator, sn.Method, sn.Size = ds.Locator, ds.Method, ds.Size
	return sn, nil
}

// backupSnapshot resolves the snapshot a backup reads (--snapshot-id): one
// of vol's, available.
func backupSnapshot(tx *index.Tx, who Identity, vol *index.Volume, ref string) (*index.Snapshot, error) {
	sn, err := findSnapshot(tx, who, ref)
	if err != nil {
		return nil, err
	}
	if sn.VolumeID != vol.ID {
		return nil, errorf(ErrUsage, "snapshot %s is of volume %s, not of volume %s (%s); name the snapshot's volume", sn.ID, sn.VolumeID, vol.ID, vol.Name)
	}
	if sn.Status != index.StatusAvailable {
		return nil, errorf(ErrInvalidState, "Invalid snapshot: Snapshot %s status must be available, but it is %s", sn.ID, sn.Status)
	}
	return sn, nil
}

// claimSnapshots, in b's claim transaction: the snapshot b reads goes to
// backing-up (checked available again), or b's own temporary snapshot is
// recorded so a crash cannot leak it.
func claimSnapshots(tx *index.Tx, b *index.Backup, from, tmp *index.Snapshot) error {
	if tmp != nil {
		return tx.PutSnapshot(tmp)
	}
	if from == nil {
		return nil
	}
	sn, err := tx.Snapshot(from.ID)
	if err != nil {
		return err
	}
	if sn.Status != index.StatusAvailable {
		return errorf(ErrInvalidState, "Invalid snapshot: Snapshot %s status must be available, but it is %s", sn.ID, sn.Status)
	}
	sn.Status, sn.UpdatedAt = index.StatusBackingUp, now()
	b.SnapshotID = sn.ID
	return tx.PutSnapshot(sn)
}

// settleSnapshots ends a backup's use of snapshots: the one it read is
// available again; its own temporary one is deleted, or kept (keep) as
// the change-tracking base of the next incremental.
func (s *Service) settleSnapshots(ctx context.Context, b *index.Backup, from, tmp *index.Snapshot, keep bool) {
	if from != nil {
		if err := s.setSnapshotStatus(from.ID, index.StatusAvailable); err != nil {
			s.log.Printf("snapshot %s: setting it available after backup %s: %v", from.ID, b.ID, err)
		}
	}
	if tmp == nil {
		return
	}
	if keep {
		err := s.update(func(tx *index.Tx) error {
			tmp.Status, tmp.UpdatedAt = index.StatusAvailable, now()
			if err := tx.PutSnapshot(tmp); err != nil {
				return err
			}
			cur, err := tx.Backup(b.ID)
			if err != nil {
				return err
			}
			cur.SnapshotID, b.SnapshotID = tmp.ID, tmp.ID
			cur.TrackingSnapshot, b.TrackingSnapshot = tmp.DriverName, tmp.DriverName
			return tx.PutBackup(cur)
		})
		if err == nil {
			s.pruneTrackingSnapshots(ctx, tmp.VolumeID, s.cfg.TrackingSnapshots, "")
			return
		}
		s.log.Printf("backup %s: keeping its snapshot as the next incremental's base: %v; deleting it", b.ID, err)
	}
	var vol *index.Volume
	s.cat.View(func(tx *index.Tx) error { vol, _ = tx.Volume(tmp.VolumeID); return nil })
	if err := s.removeSnapshot(tmp, vol); err != nil {
		s.log.Printf("backup %s: removing its snapshot %s: %v (volback removes it when it next starts)", b.ID, tmp.ID, err)
	}
	s.event(ctx, "snapshot deleted", "snapshot", tmp.ID, "backup", b.ID, "project", tmp.ProjectID)
}

// driverSnapshot is the driver's name of catalog snapshot id, or "" when
// there is none (deleted snapshots: an incremental then reads everything).
func (s *Service) driverSnapshot(id string) string {
	if id == "" {
		return ""
	}
	var sn *index.Snapshot
	if err := s.cat.View(func(tx *index.Tx) (err error) { sn, err = tx.Snapshot(id); return err }); err != nil {
		return ""
	}
	return sn.DriverName
}
