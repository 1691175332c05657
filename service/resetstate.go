package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/volback/volback/index"
)

// ResetStateRequest is backup-reset-state (Cinder's backup-reset-state,
// openstack volume backup set --state).
type ResetStateRequest struct {
	Ref   string `json:"ref"`
	State string `json:"state"` // available or error
}

// ResetBackupState (admins only) stops a restore of the backup, if one
// runs, and sets the backup's status: it gets records out of stuck
// states (error_deleting, deleting, restoring, a creating nobody runs).
// A restore stopped this way leaves its volume available, marked as
// holding incomplete content. A backup being created is cancelled with
// backup-delete --force instead. Only a backup that was restoring may be
// set available: in any other state its data may be incomplete.
func (s *Service) ResetBackupState(ctx context.Context, req ResetStateRequest) (*BackupView, error) {
	if err := requireAdmin(caller(ctx), "backup:backup-reset_status"); err != nil {
		return nil, err
	}
	if req.State == "" {
		req.State = index.StatusAvailable // Cinder's default
	}
	if req.State != index.StatusAvailable && req.State != index.StatusError {
		return nil, errorf(ErrUsage, "state %q: give available or error", req.State)
	}
	var b *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { b, err = findBackup(tx, caller(ctx), req.Ref); return err }); err != nil {
		return nil, err
	}
	if b.Status == index.StatusCreating && s.running(backupJob(b.ID)) {
		return nil, errorf(ErrInvalidState, "backup %s is being created; cancel it with 'volback backup-delete --force %s'", b.ID, b.ID)
	}
	from := b.Status
	if from == index.StatusRestoring {
		err := s.cancelJob(restoreJob(b.ID), errResetState, cancelWait)
		if err != nil && !errors.Is(err, errJobGone) {
			return nil, errorf(ErrInvalidState, "backup %s is restoring and the restore could not be stopped: %v; try again", b.ID, err)
		}
	}
	err := s.update(func(tx *index.Tx) error {
		cur, err := tx.Backup(b.ID)
		if err != nil {
			return err
		}
		if req.State == index.StatusAvailable && from != index.StatusRestoring && cur.Status != index.StatusAvailable {
			return errorf(ErrInvalidState, "backup %s is %s: setting it available would claim data that may be incomplete; reset it to error (--state error) and delete it", b.ID, cur.Status)
		}
		if cur.Status == index.StatusCreating && s.running(backupJob(b.ID)) {
			return errorf(ErrInvalidState, "backup %s is being created; cancel it with 'volback backup-delete --force %s'", b.ID, b.ID)
		}
		cur.Status, cur.UpdatedAt = req.State, now()
		b = cur
		return tx.PutBackup(cur)
	})
	if err != nil {
		return nil, err
	}
	s.event(ctx, "backup state reset", "backup", b.ID, "project", b.ProjectID, "from", from, "to", req.State)
	return s.ShowBackup(ctx, b.ID)
}

// endCancelledRestore ends a restore stopped by backup-reset-state: the
// volume is available again (cancellation is complete) and says its
// content is incomplete; the backup is available.
func (s *Service) endCancelledRestore(volID, backupID string, at time.Time) error {
	return s.update(func(tx *index.Tx) error {
		if v, err := tx.Volume(volID); err == nil {
			v.Status, v.UpdatedAt = index.StatusAvailable, now()
			v.Incomplete = fmt.Sprintf("the restore of backup %s was cancelled at %s: the content is partly the backup's and partly what was there before; restore again or delete the volume",
				backupID, at.UTC().Format(time.RFC3339))
			if err := tx.PutVolume(v); err != nil {
				return err
			}
		}
		if b, err := tx.Backup(backupID); err == nil && b.Status == index.StatusRestoring {
			b.Status, b.UpdatedAt = index.StatusAvailable, now()
			return tx.PutBackup(b)
		}
		return nil
	})
}
