package service

import (
	"context"

	"github.com/volback/volback/index"
)

// recover resolves what a process that died (kill -9, power loss) left in
// flight (and drops the catalog's spill space): unfinished backups are rolled back to `error` (their packs
// removed when the exclusive lock is free), interrupted deletes are
// finished, restores end in `error_restoring` for the volume and
// `available` for the backup, and volumes return to their status.
func (s *Service) recover(ctx context.Context) error {
	// Spill space an import, rebuild or check left when it died.
	if err := s.cat.DropScopes(""); err != nil {
		s.log.Printf("dropping what an interrupted import, rebuild or check left in the catalog: %v (harmless; retried at the next start)", err)
	}
	var backups []*index.Backup
	var vols []*index.Volume
	err := s.cat.View(func(tx *index.Tx) (err error) {
		if backups, err = tx.Backups(); err != nil {
			return err
		}
		vols, err = tx.Volumes()
		return err
	})
	if err != nil {
		return err
	}
	for _, b := range backups {
		switch b.Status {
		case index.StatusCreating:
			r, err := s.repoByID(ctx, b.RepositoryID, b.AvailabilityZone)
			if err != nil {
				s.log.Printf("backup %s was interrupted; its repository is not reachable now, will retry: %v", b.ID, err)
				continue
			}
			if b.Imported {
				if err := s.abortImport(ctx, r, b); err != nil {
					s.log.Printf("import of backup %s was interrupted; undoing it: %v (will retry)", b.ID, err)
				}
				continue
			}
			s.failBackup(ctx, r, b, errInterrupted)
		case index.StatusDeleting:
			r, err := s.finishDelete(ctx, b, false)
			if err != nil {
				s.log.Printf("backup %s: finishing an interrupted delete: %v (it is error_deleting: run backup-delete again)", b.ID, err)
				s.setErrorDeleting(b.ID, err)
				continue
			}
			if r != nil {
				s.sweep(ctx, r)
			}
		case index.StatusRestoring:
			s.setBackupStatus(b.ID, index.StatusAvailable)
		case index.StatusAvailable:
			// A crash between `available` and forgetting its uploads.
			if err := s.forgetBackupPacks(b.ID); err != nil {
				s.log.Printf("backup %s: %v", b.ID, err)
			}
		}
	}
	if err := s.recoverSnapshots(); err != nil {
		return err
	}
	return s.update(func(tx *index.Tx) error {
		for _, v := range vols {
			switch v.Status {
			case index.StatusBackingUp:
				v.Status, v.PrevStatus = v.PrevStatus, ""
				if v.Status == "" {
					v.Status = index.StatusAvailable
				}
			case index.StatusRestoringBackup:
				v.Status = index.StatusErrorRestoring
			default:
				continue
			}
			v.UpdatedAt = now()
			if err := tx.PutVolume(v); err != nil {
				return err
			}
		}
		return nil
	})
}

type interruptedError struct{}

func (interruptedError) Error() string {
	return "interrupted: the volback process stopped during the backup; run backup-create again"
}

var errInterrupted error = interruptedError{}
