package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// SnapshotRequest is snapshot-create.
type SnapshotRequest struct {
	Volume      string `json:"volume"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// Force snapshots a volume in use (Cinder's --force).
	Force bool `json:"force"`
}

// SnapshotView is a snapshot as printed, with Cinder's field names plus
// how the driver made it.
type SnapshotView struct {
	ID          string    `json:"id"`
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	VolumeID    string    `json:"volume_id"`
	Status      string    `json:"status"`
	Size        int64     `json:"size"`
	SizeBytes   int64     `json:"size_bytes"`
	Method      string    `json:"method"` // reflink, sparse-copy, rbd
	ProjectID   string    `json:"project_id"`
	BackupID    *string   `json:"backup_id"` // the backup this snapshot was taken for, if any
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func snapshotView(s *index.Snapshot) SnapshotView {
	return SnapshotView{ID: s.ID, Name: nullable(s.Name), Description: nullable(s.Description), VolumeID: s.VolumeID,
		Status: s.Status, Size: GiB(s.Size), SizeBytes: s.Size, Method: s.Method, ProjectID: s.ProjectID,
		BackupID: nullable(s.BackupID), CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt}
}

type snapRef struct{ *index.Snapshot }

func (s snapRef) ident() (string, string) { return s.ID, s.Name }

// findSnapshot resolves ref among the snapshots who may see.
func findSnapshot(tx *index.Tx, who Identity, ref string) (*index.Snapshot, error) {
	all, err := tx.Snapshots()
	if err != nil {
		return nil, err
	}
	var refs []snapRef
	for _, s := range all {
		if who.sees(s.ProjectID) {
			refs = append(refs, snapRef{s})
		}
	}
	r, err := resolve(refs, ref, "snapshot", "snapshot-list")
	return r.Snapshot, err
}

// driverSnapshotName is the name the volume driver knows snapshot id by.
func driverSnapshotName(id string) string { return "snapshot-" + id }

// usageOf asks the volume's driver whether something holds it; a driver
// that cannot tell counts as not in use.
func usageOf(v *index.Volume) volume.Usage {
	if v.Path == "" {
		return volume.Usage{}
	}
	u, err := volume.InUse(v.Path)
	if err != nil {
		return volume.Usage{}
	}
	return u
}

// CreateSnapshot takes a snapshot of a volume through its driver. A volume
// in use needs Force, as in Cinder; the snapshot is still point in time
// (a reflink clone, an RBD snapshot; a sparse copy is refused by the
// driver when the volume changed during the copy).
func (s *Service) CreateSnapshot(ctx context.Context, req SnapshotRequest) (*SnapshotView, error) {
	who := caller(ctx)
	var vol *index.Volume
	if err := s.cat.View(func(tx *index.Tx) (err error) { vol, err = findVolume(tx, who, req.Volume); return err }); err != nil {
		return nil, err
	}
	if err := volumeCanStart(vol, "a snapshot"); err != nil { // refused early, naming the status, before asking the driver
		return nil, err
	}
	if u := usageOf(vol); (u.InUse || vol.Status == index.StatusInUse) && !req.Force {
		return nil, errorf(ErrInvalidState, "Invalid volume: Volume %s status must be available, but current status is: in-use (%s). Snapshot of an in-use volume must use the force flag: pass --force",
			vol.ID, cmp.Or(u.Reason, "its status"))
	}
	t := now()
	snap := &index.Snapshot{ID: uuid.NewString(), Name: req.Name, Description: req.Description, VolumeID: vol.ID,
		Status: index.StatusCreating, ProjectID: vol.ProjectID, CreatedAt: t, UpdatedAt: t}
	snap.DriverName = driverSnapshotName(snap.ID)
	// The status is checked again and the volume claimed, with the
	// `creating` record volume-delete counts, in one transaction.
	err := s.update(func(tx *index.Tx) error {
		if _, err := claimVolume(tx, vol.ID, vol.Name, "a snapshot"); err != nil {
			return err
		}
		return tx.PutSnapshot(snap)
	})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ds, err := volume.TakeSnapshot(ctx, vol.Path, snap.DriverName)
	if err != nil {
		s.update(func(tx *index.Tx) error { return tx.DeleteSnapshot(snap.ID) })
		if errors.Is(err, volume.ErrNotSupported) {
			return nil, errorf(ErrInvalidState, "snapshot of volume %s (%s): %v", vol.ID, vol.Name, err)
		}
		return nil, fmt.Errorf("snapshot of volume %s (%s): %w", vol.ID, vol.Name, err)
	}
	err = s.update(func(tx *index.Tx) error {
		snap.Status, snap.Locator, snap.Method, snap.Size, snap.UpdatedAt = index.StatusAvailable, ds.Locator, ds.Method, ds.Size, now()
		return tx.PutSnapshot(snap)
	})
	if err != nil {
		volume.DeleteSnapshot(vol.Path, snap.DriverName)
		return nil, err
	}
	s.event(ctx, "snapshot available", "snapshot", snap.ID, "volume", vol.ID, "project", snap.ProjectID, "method", ds.Method, "duration", since(start))
	sv := snapshotView(snap)
	return &sv, nil
}

// ListSnapshots returns the caller's project's snapshots (every project's
// for an admin asking for all), optionally of one volume, newest first.
func (s *Service) ListSnapshots(ctx context.Context, volumeRef string, allProjects bool) ([]SnapshotView, error) {
	who := caller(ctx)
	out := []SnapshotView{}
	err := s.cat.View(func(tx *index.Tx) error {
		volID := ""
		if volumeRef != "" {
			v, err := findVolume(tx, who, volumeRef)
			if err != nil {
				return err
			}
			volID = v.ID
		}
		all, err := tx.Snapshots()
		if err != nil {
			return err
		}
		for i := len(all) - 1; i >= 0; i-- {
			sn := all[i]
			if (volID == "" || sn.VolumeID == volID) && who.lists(sn.ProjectID, allProjects || volID != "") {
				out = append(out, snapshotView(sn))
			}
		}
		return nil
	})
	return out, err
}

// ShowSnapshot returns one snapshot by id or name.
func (s *Service) ShowSnapshot(ctx context.Context, ref string) (*SnapshotView, error) {
	var sv SnapshotView
	err := s.cat.View(func(tx *index.Tx) error {
		sn, err := findSnapshot(tx, caller(ctx), ref)
		if err == nil {
			sv = snapshotView(sn)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &sv, nil
}

// DeleteSnapshot removes a snapshot (available or error) from its volume
// and the catalog. Backups made from it are independent of it.
func (s *Service) DeleteSnapshot(ctx context.Context, ref string) (*SnapshotView, error) {
	var sn *index.Snapshot
	var vol *index.Volume
	err := s.update(func(tx *index.Tx) error {
		var err error
		if sn, err = findSnapshot(tx, caller(ctx), ref); err != nil {
			return err
		}
		if sn.Status != index.StatusAvailable && sn.Status != index.StatusError {
			return errorf(ErrInvalidState, "Invalid snapshot: Snapshot status must be available or error, but it is %s (snapshot %s); wait for the job using it to finish", sn.Status, sn.ID)
		}
		if vol, err = tx.Volume(sn.VolumeID); err != nil && !errors.Is(err, index.ErrNotFound) {
			return err
		}
		sn.Status, sn.UpdatedAt = index.StatusDeleting, now()
		return tx.PutSnapshot(sn)
	})
	if err != nil {
		return nil, err
	}
	if err := s.removeSnapshot(sn, vol); err != nil {
		s.update(func(tx *index.Tx) error {
			sn.Status, sn.UpdatedAt = index.StatusError, now()
			return tx.PutSnapshot(sn)
		})
		return nil, err
	}
	s.event(ctx, "snapshot deleted", "snapshot", sn.ID, "volume", sn.VolumeID, "project", sn.ProjectID)
	sv := snapshotView(sn)
	sv.Status = "deleted"
	return &sv, nil
}

// removeSnapshot deletes the driver's snapshot (gone already is fine)
// and then the record.
func (s *Service) removeSnapshot(sn *index.Snapshot, vol *index.Volume) error {
	if vol != nil && vol.Path != "" && sn.Locator != "" {
		if err := volume.DeleteSnapshot(vol.Path, sn.DriverName); err != nil && !errors.Is(err, volume.ErrNotFound) {
			return fmt.Errorf("deleting snapshot %s of volume %s: %w", sn.ID, vol.ID, err)
		}
	}
	return s.update(func(tx *index.Tx) error { return tx.DeleteSnapshot(sn.ID) })
}

// recoverSnapshots settles what a process that died left: snapshots being
// created or deleted are removed, a backup's own temporary snapshot is
// removed, and snapshots being backed up are available again.
func (s *Service) recoverSnapshots() error {
	var snaps []*index.Snapshot
	if err := s.cat.View(func(tx *index.Tx) (err error) { snaps, err = tx.Snapshots(); return err }); err != nil {
		return err
	}
	for _, sn := range snaps {
		var vol *index.Volume
		s.cat.View(func(tx *index.Tx) error { vol, _ = tx.Volume(sn.VolumeID); return nil })
		switch {
		case sn.Status == index.StatusCreating || sn.Status == index.StatusDeleting || (sn.BackupID != "" && sn.Status == index.StatusBackingUp):
			if vol != nil && vol.Path != "" {
				volume.DeleteSnapshot(vol.Path, sn.DriverName) // it may not exist: taken or not
			}
			if err := s.update(func(tx *index.Tx) error { return tx.DeleteSnapshot(sn.ID) }); err != nil {
				return err
			}
		case sn.Status == index.StatusBackingUp:
			if err := s.setSnapshotStatus(sn.ID, index.StatusAvailable); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Service) setSnapshotStatus(id, status string) error {
	return s.update(func(tx *index.Tx) error {
		sn, err := tx.Snapshot(id)
		if err != nil {
			return err
		}
		sn.Status, sn.UpdatedAt = status, now()
		return tx.PutSnapshot(sn)
	})
}
