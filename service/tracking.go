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
// tracking beyond the newest keep, never the one named spare (the driver's
// name; "" spares none). Snapshots users made are never touched; a
// failure is logged and retried after the next backup.
func (s *Service) pruneTrackingSnapshots(ctx context.Context, volumeID string, keep int, spare string) {
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
	for _, sn := range kept[min(len(kept), max(keep, 0)):] {
		if sn.DriverName == spare {
			continue
		}
		if err := s.removeSnapshot(sn, vol); err != nil {
			s.log.Printf("volume %s: deleting change-tracking snapshot %s (backup %s): %v", volumeID, sn.DriverName, sn.BackupID, err)
			continue
		}
		s.event(ctx, "snapshot deleted", "snapshot", sn.ID, "backup", sn.BackupID, "reason", "change_tracking_snapshots")
	}
}

// pruneAhead starts, once a backup that will keep its own snapshot has
// asked the driver for its changes, the pruning its success would do
// anyway: the volume keeps the newest cfg.TrackingSnapshots-1 older
// snapshots and always the base the backup diffed against (base, "" for
// none). Removing an RBD snapshot waits for the monitors to commit a new
// OSD map, about a second (paxos_propose_interval) when the backup's own
// snapshot was just taken, so doing it while the backup reads hides that
// second instead of adding it to every incremental after the second. A
// backup that then fails has still pruned; what it removed was older than
// its base, which the next incremental diffs against. The returned
// function waits until the pruning is done.
func (s *Service) pruneAhead(ctx context.Context, volumeID, base string) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pruneTrackingSnapshots(ctx, volumeID, s.cfg.TrackingSnapshots-1, base)
	}()
	return func() { <-done }
}
