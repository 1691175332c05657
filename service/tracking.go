package service

import (
	"context"
	"sort"

	"github.com/volback/volback/index"
)

// Change tracking. A backup of a volume whose driver reports the changes
// since one of its snapshots (RBD) reads a snapshot taken at its start,
// volback.<backup-id>, and keeps it (see consistencyPlan and
// settleSnapshots): the next incremental asks the driver what changed
// since the parent's snapshot and reads only that (plan). The newest
// cfg.TrackingSnapshots of these snapshots are kept per volume.

// trackingSnapshotName is the driver's name of the snapshot backup id
// reads (and, for a change-tracking volume, leaves for the next
// incremental).
func trackingSnapshotName(backupID string) string { return "volback." + backupID }

// pruneTrackingSnapshots deletes the volume's snapshots kept for change
// tracking beyond the newest cfg.TrackingSnapshots. Snapshots users made
// are never touched; a failure is logged and retried after the next backup.
func (s *Service) pruneTrackingSnapshots(ctx context.Context, volumeID string) {
	var vol *index.Volume
	var kept []*index.Snapshot
	err := s.cat.View(func(tx *index.Tx) error {
		v, err := tx.Volume(volumeID)
		if err != nil {
			return err
		}
		vol = v
		all, err := tx.Snapshots()
		for _, sn := range all {
			if sn.VolumeID == volumeID && sn.BackupID != "" && sn.Status == index.StatusAvailable {
				kept = append(kept, sn)
			}
		}
		return err
	})
	if err != nil {
		s.log.Printf("volume %s: listing its change-tracking snapshots: %v", volumeID, err)
		return
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].CreatedAt.After(kept[j].CreatedAt) })
	for _, sn := range kept[min(len(kept), s.cfg.TrackingSnapshots):] {
		if err := s.removeSnapshot(sn, vol); err != nil {
			s.log.Printf("volume %s: deleting change-tracking snapshot %s (backup %s): %v", volumeID, sn.DriverName, sn.BackupID, err)
			continue
		}
		s.event(ctx, "snapshot deleted", "snapshot", sn.ID, "backup", sn.BackupID, "reason", "change_tracking_snapshots")
	}
}
