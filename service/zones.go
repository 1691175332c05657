package service

import (
	"context"

	"github.com/volback/volback/index"
)

// zoneAcceptsWork refuses new work for a zone whose backup service an
// admin disabled (service-disable).
func (s *Service) zoneAcceptsWork(zone string) error {
	var st index.Service
	if err := s.cat.View(func(tx *index.Tx) (err error) { st, _, err = tx.ServiceState(backupBinary, zone); return err }); err != nil {
		return err
	}
	if st.Disabled {
		return errorf(ErrInvalidState, "Service %s in availability zone %s is disabled (%s); no new backups or restores go there until an admin runs 'volback service-enable %s'",
			backupBinary, zone, cmpOr(st.DisabledReason, "no reason given"), zone)
	}
	return nil
}

// unreachable turns a zone's repository failing to open into an error
// backup record, so the failure shows in backup-list with its reason.
func (s *Service) unreachable(ctx context.Context, vol *index.Volume, req BackupRequest, zone string, cause error) error {
	return cause
}

const backupBinary = "volback-backup"
