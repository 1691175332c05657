package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// ManageRequest registers an existing volume: an image file or block
// device by absolute path, or any locator a volume driver serves. With ID
// (or a Name that only a source-less volume has) the source is attached
// to that existing volume instead: see reattach.
type ManageRequest struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	AvailabilityZone string `json:"availability_zone"`
	Source           string `json:"source"`
	Project          string `json:"project"`
}

// CreateRequest makes a new volume (an image file, or an RBD image where
// the zone's volumes are), empty or restored from a backup.
type CreateRequest struct {
	Name             string `json:"name"`
	BackupID         string `json:"backup_id"`
	AvailabilityZone string `json:"availability_zone"`
	Path             string `json:"path"`
	Size             int64  `json:"size_bytes"` // 0 with BackupID: the backup's size
	Project          string `json:"project"`
}

func (s *Service) zone(az string) (string, error) {
	if az == "" {
		return s.cfg.DefaultZone, nil
	}
	if _, ok := s.cfg.Zones[az]; !ok {
		return "", errorf(ErrUsage, "availability zone %q is not configured; configured zones: %v", az, s.cfg.ZoneNames())
	}
	return az, nil
}

// actingProject is the project a request acts for: its own Project
// field when set (an admin acting for another project), else the
// caller's.
func actingProject(ctx context.Context, p string) (string, error) {
	who := caller(ctx)
	switch {
	case p == "" || p == who.Project:
		return who.Project, nil
	case !who.Admin():
		return "", errorf(ErrForbidden, "%s is a member of project %s and cannot act for project %s; only an admin can (--os-project-id)", who, who.Project, p)
	}
	return p, checkProject(p)
}

// Manage registers SOURCE as a volume; its driver (file, block, ...) and
// size are what the volume driver serving SOURCE reports. A volume that
// lost its source (rebuilt from backup records, or its file is gone)
// gets SOURCE back instead, so its backup chain continues.
func (s *Service) Manage(ctx context.Context, req ManageRequest) (*VolumeView, error) {
	if req.Name == "" && req.ID == "" {
		return nil, errorf(ErrUsage, "manage: --name is required; name the volume")
	}
	proj, err := actingProject(ctx, req.Project)
	if err != nil {
		return nil, err
	}
	info, err := volume.Stat(req.Source)
	if err != nil {
		return nil, err
	}
	az := ""
	if req.ID == "" || req.AvailabilityZone != "" {
		if az, err = s.zone(req.AvailabilityZone); err != nil {
			return nil, err
		}
	}
	t := now()
	v := &index.Volume{ID: uuid.NewString(), Name: req.Name, Status: index.StatusAvailable, Size: info.Size,
		Path: info.Locator, Driver: info.Driver, AvailabilityZone: az, ProjectID: proj, CreatedAt: t, UpdatedAt: t}
	err = s.update(func(tx *index.Tx) error {
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		old, err := reattachTarget(tx, Identity{UID: caller(ctx).UID, User: caller(ctx).User, Project: proj, Role: caller(ctx).Role}, vols, req, info)
		if err != nil {
			return err
		}
		for _, o := range vols {
			if o.Path == info.Locator && (old == nil || o.ID != old.ID) {
				return fmt.Errorf("source %s is already managed as volume %s (%s); use that volume", info.Locator, o.ID, o.Name)
			}
		}
		if old != nil {
			if req.AvailabilityZone != "" && az != old.AvailabilityZone {
				return fmt.Errorf("volume %s (%s) is in availability zone %q, not %q; omit --availability-zone to attach the source to it",
					old.ID, old.Name, old.AvailabilityZone, az)
			}
			old.Path, old.Driver, old.Size, old.Status, old.UpdatedAt = info.Locator, info.Driver, info.Size, index.StatusAvailable, t
			old.Placeholder, old.Owned = false, false // volback did not create SOURCE: delete must not remove it
			v = old
		}
		return tx.PutVolume(v)
	})
	if err != nil {
		return nil, err
	}
	vv := volumeView(v)
	return &vv, nil
}

// CreateVolume makes a new sparse image file, empty or restored from a backup.
func (s *Service) CreateVolume(ctx context.Context, req CreateRequest, progress ProgressFunc) (*VolumeView, error) {
	if req.Name == "" {
		return nil, errorf(ErrUsage, "create: --name is required; name the volume")
	}
	if err := requirePathAdmin(ctx, req.Path); err != nil {
		return nil, err
	}
	if req.BackupID != "" {
		rv, err := s.Restore(ctx, RestoreRequest{Backup: req.BackupID, Name: req.Name, Size: req.Size,
			Path: req.Path, AvailabilityZone: req.AvailabilityZone, Project: req.Project}, progress)
		if err != nil {
			return nil, err
		}
		return s.ShowVolume(ctx, rv.VolumeID)
	}
	if req.Size <= 0 {
		return nil, errorf(ErrUsage, "create: SIZE must be positive (GiB, or with a unit such as 256M)")
	}
	proj, err := actingProject(ctx, req.Project)
	if err != nil {
		return nil, err
	}
	v, tgt, err := s.newVolume(req.Name, req.Path, req.AvailabilityZone, proj, req.Size, index.StatusAvailable, nil)
	if err != nil {
		return nil, err
	}
	if err := tgt.Close(); err != nil {
		return nil, err
	}
	vv := volumeView(v)
	return &vv, nil
}

// newVolume creates the image file and the catalog record (in status) of a
// volume volback owns. A failure leaves neither behind.
func (s *Service) newVolume(name, path, az, proj string, size int64, status string, claim func(*index.Tx) error) (*index.Volume, volume.Target, error) {
	az, err := s.zone(az)
	if err != nil {
		return nil, nil, err
	}
	id := uuid.NewString()
	if path == "" {
		if path, err = s.newLocator(az, id); err != nil {
			return nil, nil, fmt.Errorf("availability zone %q: %w", az, err)
		}
	}
	tgt, err := volume.CreateTarget(path, size)
	if err != nil {
		return nil, nil, err
	}
	info, err := volume.Stat(path)
	if err == nil {
		t := now()
		v := &index.Volume{ID: id, Name: name, Status: status, Size: size, Path: info.Locator, Driver: info.Driver,
			Owned: true, AvailabilityZone: az, ProjectID: proj, CreatedAt: t, UpdatedAt: t}
		if err = s.update(func(tx *index.Tx) error {
			if claim != nil {
				if err := claim(tx); err != nil {
					return err
				}
			}
			return tx.PutVolume(v)
		}); err == nil {
			return v, tgt, nil
		}
	}
	tgt.Close()
	volume.Delete(path)
	return nil, nil, err
}

// ListVolumes returns the caller's project's volumes, or with all every
// project's when the caller is an admin.
func (s *Service) ListVolumes(ctx context.Context, all bool) ([]VolumeView, error) {
	out := []VolumeView{}
	who := caller(ctx)
	err := s.cat.View(func(tx *index.Tx) error {
		vols, err := tx.Volumes()
		for _, v := range vols {
			if who.lists(v.ProjectID, all) {
				out = append(out, liveView(v))
			}
		}
		return err
	})
	return out, err
}

// ShowVolume returns one volume by id or name.
func (s *Service) ShowVolume(ctx context.Context, ref string) (*VolumeView, error) {
	var vv VolumeView
	err := s.cat.View(func(tx *index.Tx) error {
		v, err := findVolume(tx, caller(ctx), ref)
		if err == nil {
			vv = liveView(v)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &vv, nil
}

// DeleteVolume forgets a volume; its file (image) is removed only when
// volback created it. Snapshots volback kept for change tracking go with
// it; other snapshots must be deleted first.
func (s *Service) DeleteVolume(ctx context.Context, ref string) (*VolumeView, error) {
	var v *index.Volume
	var tracking []*index.Snapshot
	err := s.update(func(tx *index.Tx) error {
		var err error
		if v, err = findVolume(tx, caller(ctx), ref); err != nil {
			return err
		}
		if v.Status != index.StatusAvailable && v.Status != index.StatusError && v.Status != index.StatusErrorRestoring {
			return errorf(ErrInvalidState, "volume %s is %s; wait for the running job to finish (or cancel it) before deleting", v.ID, v.Status)
		}
		snaps, err := tx.Snapshots()
		if err != nil {
			return err
		}
		n := 0
		tracking = tracking[:0]
		for _, sn := range snaps {
			switch {
			case sn.VolumeID != v.ID:
			case sn.BackupID != "" && sn.Status == index.StatusAvailable:
				tracking = append(tracking, sn) // volback's own, kept for change tracking: they go with the volume
			default:
				n++
			}
		}
		if n > 0 {
			return errorf(ErrInvalidState, "Invalid volume: Volume %s still has %d dependent snapshots; delete them first (volback snapshot-list --volume-id %s)", v.ID, n, v.ID)
		}
		for _, sn := range tracking {
			if err := tx.DeleteSnapshot(sn.ID); err != nil {
				return err
			}
		}
		return tx.DeleteVolume(v.ID)
	})
	if err != nil {
		return nil, err
	}
	for _, sn := range tracking {
		if err := volume.DeleteSnapshot(v.Path, sn.DriverName); err != nil && !errors.Is(err, volume.ErrNotFound) {
			s.log.Printf("volume %s: deleting its change-tracking snapshot %s: %v (remove it by hand if the volume stays)", v.ID, sn.DriverName, err)
		}
	}
	if v.Owned && v.Path != "" {
		if err := volume.Delete(v.Path); err != nil && !errors.Is(err, volume.ErrNotFound) {
			return nil, fmt.Errorf("volume %s forgotten, but deleting %s failed: %v; remove it by hand", v.ID, v.Path, err)
		}
	}
	s.event(ctx, "volume deleted", "volume", v.ID, "project", v.ProjectID)
	vv := volumeView(v)
	vv.Status = "deleted"
	return &vv, nil
}

// liveView is v as printed with its driver's view of now: an available
// volume that something holds (a mount, a loop device, QEMU's lock) shows
// in-use, and an in-use one that nothing holds any more, available.
func liveView(v *index.Volume) VolumeView {
	vv := volumeView(v)
	if v.Status == index.StatusAvailable || v.Status == index.StatusInUse {
		if usageOf(v).InUse {
			vv.Status = index.StatusInUse
		} else {
			vv.Status = index.StatusAvailable
		}
	}
	return vv
}
