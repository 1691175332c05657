package service

import (
	"cmp"
	"context"
	"fmt"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
)

// Cinder's default backup quotas.
const (
	DefaultBackupQuota          = 10
	DefaultBackupGigabytesQuota = 1000
)

// QuotaView is a project's backup quotas (quota-show, quota-update).
type QuotaView struct {
	ProjectID       string `json:"project_id"`
	Backups         int64  `json:"backups"`
	BackupGigabytes int64  `json:"backup_gigabytes"`
}

// QuotaUsage is one line of quota-usage, as Cinder prints it.
type QuotaUsage struct {
	Type     string `json:"type"`
	InUse    int64  `json:"in_use"`
	Reserved int64  `json:"reserved"`
	Limit    int64  `json:"limit"`
}

// QuotaRequest is quota-show, quota-usage and quota-update. Nil limits are
// left as they are.
type QuotaRequest struct {
	Project         string `json:"project"`
	Backups         *int64 `json:"backups,omitempty"`
	BackupGigabytes *int64 `json:"backup_gigabytes,omitempty"`
}

// usage counts a project's backups from their records: those being
// created are reserved (the record of a backup in `creating` is its
// reservation, committed when it ends available or error and rolled back
// when the record goes), every other one is in use until deleted, as in
// Cinder (backups in error count).
type usage struct{ backups, gigabytes, resBackups, resGigabytes int64 }

func projectUsage(tx *index.Tx, project string) (usage, error) {
	all, err := tx.Backups()
	if err != nil {
		return usage{}, err
	}
	var u usage
	for _, b := range all {
		if cmp.Or(b.ProjectID, DefaultProject) != project {
			continue
		}
		if b.Status == index.StatusCreating {
			u.resBackups++
			u.resGigabytes += GiB(b.SizeBytes)
		} else {
			u.backups++
			u.gigabytes += GiB(b.SizeBytes)
		}
	}
	return u, nil
}

func limits(tx *index.Tx, project string) (index.Quota, error) {
	q, found, err := tx.Quota(project)
	if !found && err == nil {
		q = index.Quota{Backups: DefaultBackupQuota, BackupGigabytes: DefaultBackupGigabytesQuota}
	}
	return q, err
}

// reserveBackup checks that one more backup of size bytes fits project's
// quotas, in the transaction that then writes the backup's `creating`
// record (the reservation), so concurrent creates cannot overshoot.
func reserveBackup(tx *index.Tx, project string, size int64) error {
	project = cmp.Or(project, DefaultProject) // records older than projects
	if err := tx.GuardQuota(project); err != nil {
		return err
	}
	return checkBackupQuota(tx, project, size)
}

// checkBackupQuota is reserveBackup's check alone (a read-only
// transaction can run it early, before any work).
func checkBackupQuota(tx *index.Tx, project string, size int64) error {
	project = cmp.Or(project, DefaultProject)
	q, err := limits(tx, project)
	if err != nil {
		return err
	}
	u, err := projectUsage(tx, project)
	if err != nil {
		return err
	}
	if q.Backups >= 0 && u.backups+u.resBackups+1 > q.Backups {
		return errorf(ErrQuotaExceeded, "Maximum number of backups allowed (%d) exceeded: project %s has %d backups and %d being created; delete backups or ask an admin to raise the quota (quota-update --backups)",
			q.Backups, project, u.backups, u.resBackups)
	}
	gb := GiB(size)
	if q.BackupGigabytes >= 0 && u.gigabytes+u.resGigabytes+gb > q.BackupGigabytes {
		return errorf(ErrQuotaExceeded, "Requested backup exceeds allowed Backup gigabytes quota. Requested %dG, quota is %dG and %dG has been consumed (project %s); delete backups or ask an admin to raise the quota (quota-update --backup-gigabytes)",
			gb, q.BackupGigabytes, u.gigabytes+u.resGigabytes, project)
	}
	return nil
}

// importQuota refuses, before any work, an import that would take rec's
// project over its backup quotas. Cinder's import_record reserves one
// backup and the record's size the same way a create does; the
// reservation itself is reserveBackup in the transaction that writes the
// imported record (commitImport), so concurrent imports cannot overshoot.
func (s *Service) importQuota(rec *chunkstore.Record) error {
	err := s.cat.View(func(tx *index.Tx) error { return checkBackupQuota(tx, rec.ProjectID, rec.SizeBytes) })
	if err != nil {
		return fmt.Errorf("backup-import of %s: %w", rec.ID, err)
	}
	return nil
}

// quotaProject is the project a quota request names: the caller's own
// when empty; another project's only for an admin.
func quotaProject(ctx context.Context, p string) (string, error) {
	who := caller(ctx)
	if p == "" || p == who.Project {
		return who.Project, nil
	}
	if !who.Admin() {
		return "", errorf(ErrForbidden, "Policy doesn't allow volume_extension:quotas:show to be performed. (%s is a member of project %s and may see only its quotas)", who, who.Project)
	}
	return p, checkProject(p)
}

// ShowQuota returns a project's backup quotas.
func (s *Service) ShowQuota(ctx context.Context, req QuotaRequest) (*QuotaView, error) {
	p, err := quotaProject(ctx, req.Project)
	if err != nil {
		return nil, err
	}
	var q index.Quota
	if err := s.cat.View(func(tx *index.Tx) (err error) { q, err = limits(tx, p); return err }); err != nil {
		return nil, err
	}
	return &QuotaView{ProjectID: p, Backups: q.Backups, BackupGigabytes: q.BackupGigabytes}, nil
}

// QuotaUsage returns in_use, reserved and limit of a project's quotas.
func (s *Service) QuotaUsage(ctx context.Context, req QuotaRequest) ([]QuotaUsage, error) {
	p, err := quotaProject(ctx, req.Project)
	if err != nil {
		return nil, err
	}
	var q index.Quota
	var u usage
	err = s.cat.View(func(tx *index.Tx) (err error) {
		if q, err = limits(tx, p); err != nil {
			return err
		}
		u, err = projectUsage(tx, p)
		return err
	})
	if err != nil {
		return nil, err
	}
	return []QuotaUsage{
		{Type: "backups", InUse: u.backups, Reserved: u.resBackups, Limit: q.Backups},
		{Type: "backup_gigabytes", InUse: u.gigabytes, Reserved: u.resGigabytes, Limit: q.BackupGigabytes},
	}, nil
}

// UpdateQuota sets a project's limits (admins only). A limit below what
// the project already uses is refused, as Cinder does.
func (s *Service) UpdateQuota(ctx context.Context, req QuotaRequest) (*QuotaView, error) {
	if err := requireAdmin(caller(ctx), "volume_extension:quotas:update"); err != nil {
		return nil, err
	}
	p, err := quotaProject(ctx, req.Project)
	if err != nil {
		return nil, err
	}
	for _, v := range []*int64{req.Backups, req.BackupGigabytes} {
		if v != nil && *v < -1 {
			return nil, errorf(ErrUsage, "quota limit %d: give a number >= 0, or -1 for unlimited", *v)
		}
	}
	var q index.Quota
	err = s.update(func(tx *index.Tx) error {
		if err := tx.GuardQuota(p); err != nil {
			return err
		}
		if q, err = limits(tx, p); err != nil {
			return err
		}
		u, err := projectUsage(tx, p)
		if err != nil {
			return err
		}
		for _, c := range []struct {
			key        string
			want       *int64
			used       int64
			limitField *int64
		}{{"backups", req.Backups, u.backups + u.resBackups, &q.Backups},
			{"backup_gigabytes", req.BackupGigabytes, u.gigabytes + u.resGigabytes, &q.BackupGigabytes}} {
			if c.want == nil {
				continue
			}
			if *c.want >= 0 && *c.want < c.used {
				return errorf(ErrInvalidState, "Quota %s limit must be equal or greater than existing resources. Current usage is %d and the requested limit is %d (project %s); delete backups first",
					c.key, c.used, *c.want, p)
			}
			*c.limitField = *c.want
		}
		return tx.PutQuota(p, q)
	})
	if err != nil {
		return nil, err
	}
	s.event(ctx, "quota updated", "project", p, "backups", q.Backups, "backup_gigabytes", q.BackupGigabytes)
	return &QuotaView{ProjectID: p, Backups: q.Backups, BackupGigabytes: q.BackupGigabytes}, nil
}
