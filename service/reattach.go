package service

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// A volume can lose its source: catalog-rebuild makes placeholders (the
// records do not say where the data came from), and an image file can be
// deleted or a disk unplugged. Managing a source onto such a volume
// reattaches it, so its backups stay its own and --incremental finds the
// parent; a second volume of the same name would start a new chain.

// detached reports whether v has no usable source: a placeholder, or a
// source the driver says no longer exists. A volume in status error (set
// when a backup found its source gone) counts too, so a source that came
// back at the same path can be managed again.
func detached(v *index.Volume) bool {
	if v.Placeholder || v.Path == "" || v.Status == index.StatusError {
		return true
	}
	_, err := volume.Stat(v.Path)
	return errors.Is(err, volume.ErrNotFound)
}

// reattachTarget is the existing volume that req's source attaches to: the
// volume req.ID names, which must be detached, else the one detached
// volume of the project named req.Name (several are refused), else nil
// for a new volume.
func reattachTarget(tx *index.Tx, who Identity, vols []*index.Volume, req ManageRequest, info volume.Info) (*index.Volume, error) {
	if req.ID != "" {
		v, err := findVolume(tx, who, req.ID)
		if err != nil {
			return nil, err
		}
		if req.Name != "" && req.Name != v.Name {
			return nil, fmt.Errorf("volume %s is named %q, not %q; omit --name (or give %q) to attach the source to it", v.ID, v.Name, req.Name, v.Name)
		}
		if !detached(v) && v.Path != info.Locator {
			return nil, fmt.Errorf("volume %s (%s) already has source %s, which exists; manage %s as a new volume (without --id), or delete volume %s first",
				v.ID, v.Name, v.Path, info.Locator, v.ID)
		}
		return v, checkIdle(v)
	}
	var cands []*index.Volume
	for _, v := range vols {
		if v.Name == req.Name && v.ProjectID == who.Project && detached(v) {
			cands = append(cands, v)
		}
	}
	switch len(cands) {
	case 0:
		return nil, nil
	case 1:
		return cands[0], checkIdle(cands[0])
	}
	ids := make([]string, len(cands))
	for i, c := range cands {
		ids[i] = c.ID
	}
	return nil, fmt.Errorf("%d volumes named %q have no source (%s); say which one gets %s with --id ID", len(cands), req.Name, strings.Join(ids, ", "), info.Locator)
}

// checkIdle refuses to reattach a volume a job is using.
func checkIdle(v *index.Volume) error {
	switch v.Status {
	case index.StatusAvailable, index.StatusError, index.StatusErrorRestoring:
		return nil
	}
	return fmt.Errorf("volume %s (%s) is %s; wait for the running job to finish before managing a source onto it", v.ID, v.Name, v.Status)
}

// checkSource refuses a backup of a volume whose source no longer exists,
// before any backup record is made, and marks the volume error so listings
// show it: each retry would otherwise add one more error backup.
func (s *Service) checkSource(vol *index.Volume) error {
	if vol.Placeholder || vol.Path == "" {
		return nil // refused with its own reason when the backup is claimed
	}
	if _, err := volume.Stat(vol.Path); !errors.Is(err, volume.ErrNotFound) {
		return nil // other trouble shows as the backup's fail_reason
	}
	err := s.update(func(tx *index.Tx) error {
		v, err := tx.Volume(vol.ID)
		if err != nil || (v.Status != index.StatusAvailable && v.Status != index.StatusInUse) {
			return err
		}
		v.Status, v.UpdatedAt = index.StatusError, now()
		return tx.PutVolume(v)
	})
	if err != nil {
		return err
	}
	return fmt.Errorf("volume %s (%s): source %s no longer exists; manage it again (volback manage --name %s SOURCE attaches a source to this volume) or delete the volume",
		vol.ID, vol.Name, vol.Path, vol.Name)
}

// ownedPath is where volback creates the image file of volume id when no
// path is given and its zone names no place for volumes; catalog-rebuild
// looks there to find it again.
func (s *Service) ownedPath(id string) string {
	return filepath.Join(s.cfg.Home, "volumes", id+".img")
}

// newLocator is where volback creates volume id of zone az when no path is
// given: in the zone's volumes location (a directory, an RBD pool), else
// under the home.
func (s *Service) newLocator(az, id string) (string, error) {
	if z := s.cfg.Zones[az]; z.Volumes != "" {
		return volume.Place(z.Volumes, id)
	}
	return s.ownedPath(id), nil
}

// rebuiltVolume is the catalog entry for a volume that a rebuilt backup
// record names and the catalog does not know: the volume volback made for
// it (in its zone's volumes location, or under <home>/volumes/) when that
// is still there, else a placeholder without a source (manage reattaches
// one).
func (s *Service) rebuiltVolume(rec *chunkstore.Record) *index.Volume {
	v := &index.Volume{ID: rec.VolumeID, Name: rec.VolumeName, Status: index.StatusAvailable,
		Size: rec.VolumeSizeBytes, Driver: "file", AvailabilityZone: rec.AvailabilityZone,
		ProjectID: rec.ProjectID, Placeholder: true, CreatedAt: rec.CreatedAt, UpdatedAt: now()}
	if _, err := uuid.Parse(rec.VolumeID); err != nil || len(rec.VolumeID) != 36 {
		return v // not a name volback would have made a file under
	}
	places := []string{s.ownedPath(rec.VolumeID)}
	if loc, err := s.newLocator(rec.AvailabilityZone, rec.VolumeID); err == nil && loc != places[0] {
		places = append([]string{loc}, places...)
	}
	for _, p := range places {
		if info, err := volume.Stat(p); err == nil {
			v.Path, v.Driver, v.Size, v.Owned, v.Placeholder = info.Locator, info.Driver, info.Size, true, false
			break
		}
	}
	return v
}

// strayImages lists, as rebuild problems, image files under <home>/volumes/
// that no volume has: volumes volback created that no backup record names.
func (s *Service) strayImages() []string {
	dir := filepath.Join(s.cfg.Home, "volumes")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	known := map[string]bool{}
	s.cat.View(func(tx *index.Tx) error {
		vols, err := tx.Volumes()
		for _, v := range vols {
			known[v.Path] = true
		}
		return err
	})
	var out []string
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if !known[p] && strings.HasSuffix(e.Name(), ".img") {
			out = append(out, fmt.Sprintf("image file %s belongs to no volume (no backup record names it): manage it (volback manage --name NAME %s) or remove it", p, p))
		}
	}
	return out
}
