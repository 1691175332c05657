package service

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// Change tracking. A backup of a volume whose driver reports the changes
// since one of its snapshots (RBD) reads a snapshot taken at its start,
// volback.<backup-id>, and keeps it: the next incremental then asks the
// driver what changed since that snapshot and reads only that. The newest
// cfg.TrackingSnapshots of these snapshots are kept per volume.

// trackingSnapshotName is the driver's name of the snapshot backup id
// reads and leaves for the next incremental.
func trackingSnapshotName(backupID string) string { return "volback." + backupID }

// tracksChanges reports whether vol's driver reports changes since a
// snapshot (volume.ChangeTracker), which makes a backup's snapshot worth
// keeping.
func (s *Service) tracksChanges(vol *index.Volume) bool {
	src, err := s.openSource(vol)
	if err != nil {
		return false
	}
	defer src.Close()
	_, ok := src.(volume.ChangeTracker)
	return ok
}

// takeTrackingSnapshot snapshots vol for backup b when its driver tracks
// changes, and returns nil when it does not.
func (s *Service) takeTrackingSnapshot(ctx context.Context, vol *index.Volume, b *index.Backup) (*volume.Snapshot, error) {
	if !s.tracksChanges(vol) {
		return nil, nil
	}
	snap, err := volume.TakeSnapshot(ctx, vol.Path, trackingSnapshotName(b.ID))
	if err != nil {
		return nil, fmt.Errorf("snapshot of volume %s (%s) for backup %s: %w", vol.ID, vol.Name, b.ID, err)
	}
	return &snap, nil
}

// settleTracking ends backup b's use of its snapshot: kept when b became
// available (and the oldest beyond the retention deleted), else deleted.
func (s *Service) settleTracking(vol *index.Volume, b *index.Backup, snap *volume.Snapshot, ok bool) {
	if snap == nil {
		return
	}
	if !ok || s.cfg.TrackingSnapshots == 0 {
		s.dropTrackingSnapshot(vol, b.ID, snap.Name)
		return
	}
	var all []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { all, err = tx.Backups(); return err }); err != nil {
		s.log.Printf("volume %s: listing backups for change-tracking snapshot retention: %v", vol.ID, err)
		return
	}
	var kept []*index.Backup
	for _, o := range all {
		if o.VolumeID == vol.ID && o.Status == index.StatusAvailable && o.TrackingSnapshot != "" {
			kept = append(kept, o)
		}
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].DataTimestamp.After(kept[j].DataTimestamp) })
	for _, o := range kept[min(len(kept), s.cfg.TrackingSnapshots):] {
		s.dropTrackingSnapshot(vol, o.ID, o.TrackingSnapshot)
	}
}

// dropTrackingSnapshot deletes a backup's change-tracking snapshot; one
// already gone is fine, other failures are logged (the snapshot then stays
// until the volume is deleted or it is removed by hand).
func (s *Service) dropTrackingSnapshot(vol *index.Volume, backupID, name string) {
	err := volume.DeleteSnapshot(vol.Path, name)
	if err != nil && !errors.Is(err, volume.ErrNotFound) {
		s.log.Printf("backup %s: deleting its change-tracking snapshot %s of volume %s: %v", backupID, name, vol.Path, err)
	}
}
