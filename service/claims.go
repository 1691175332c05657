package service

import (
	"errors"

	"github.com/volback/volback/index"
)

// volumeCanStart refuses a volume that cannot start op ("a backup", "a
// snapshot"): it must be available or in-use (not backed up or restored
// into by a running job, not in error) and have a known source. Callers
// run it in the transaction that then claims the volume by writing it
// (backup-create marks it backing-up; snapshot-create, claimVolume), so
// no other change can come between the check and the claim.
func volumeCanStart(v *index.Volume, op string) error {
	switch v.Status {
	case index.StatusAvailable, index.StatusInUse:
	case index.StatusError:
		return errorf(ErrInvalidState, "Invalid volume: %s cannot be taken of volume %s (%s) in error status (its source went missing): manage the source again (volback manage --name %s SOURCE) or restore a backup into it",
			op, v.ID, v.Name, v.Name)
	case index.StatusErrorRestoring:
		return errorf(ErrInvalidState, "Invalid volume: %s cannot be taken of volume %s (%s) in %s status (a restore into it did not finish, so it holds part of a backup): restore a backup into it again first",
			op, v.ID, v.Name, v.Status)
	default:
		return errorf(ErrInvalidState, "Invalid volume: Volume %s (%s) status must be available or in-use, but current status is: %s; wait for the running job to finish before %s (volback show %s)",
			v.ID, v.Name, v.Status, op, v.ID)
	}
	if v.Placeholder || v.Path == "" {
		return errorf(ErrInvalidState, "volume %s (%s) was rebuilt from a backup record and has no known source; manage the source again (volback manage --name %s SOURCE) before %s",
			v.ID, v.Name, v.Name, op)
	}
	return nil
}

// claimVolume checks, in tx, that volume id can start op and claims it by
// writing its record back (updated_at now) even when its status stays, as
// a snapshot's does. A transaction reads a range of records without
// conflicting with one that adds a record to it (volume-delete counting
// snapshots while snapshot-create adds one), but it does conflict on a
// record the other wrote: so a volume-delete that read this volume and
// commits after this claim runs again and sees the claim.
func claimVolume(tx *index.Tx, id, name, op string) (*index.Volume, error) {
	v, err := tx.Volume(id)
	if errors.Is(err, index.ErrNotFound) {
		return nil, errorf(ErrNotFound, "volume %s (%s) was deleted before %s of it could start", id, name, op)
	} else if err != nil {
		return nil, err
	}
	if err := volumeCanStart(v, op); err != nil {
		return nil, err
	}
	v.UpdatedAt = now()
	return v, tx.PutVolume(v)
}
