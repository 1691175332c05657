package api

import (
	"context"

	"github.com/volback/volback/service"
)

// S and PF shorten the operations' signatures below.
type (
	S  = service.Service
	PF = service.ProgressFunc
)

const (
	get  = "GET"
	post = "POST"
	put  = "PUT"
	del  = "DELETE"
)

// call adapts a service method that reports no progress to an operation.
func call[Req, Resp any](f func(*S, context.Context, Req) (Resp, error)) func(*S, context.Context, Req, PF) (Resp, error) {
	return func(s *S, ctx context.Context, r Req, _ PF) (Resp, error) { return f(s, ctx, r) }
}

// byRef adapts a service method that takes the reference (id or name) of
// one volume, backup, snapshot or repository to an operation.
func byRef[Resp any](f func(*S, context.Context, string) (Resp, error)) func(*S, context.Context, service.Ref, PF) (Resp, error) {
	return func(s *S, ctx context.Context, r service.Ref, _ PF) (Resp, error) { return f(s, ctx, r.Ref) }
}

// The operations of the service: one entry per verb, with its policy,
// idempotency, what to tell a caller who lost the owner mid-call, and the
// Cinder v3 routes that reach it (cinder_*.go).
func init() {
	register(
		def(Op{Verb: "manage", Admin: "volume_extension:volume_manage"}, // reads any path as the owner: members use create
			call((*S).Manage)),
		def(Op{Verb: "create", Background: true,
			Unknown: "a volume it left unfinished is in 'volback list' (a restore into it ends error_restoring); check and delete or create it again if needed"},
			(*S).CreateVolume,
			Route[service.CreateRequest, *service.VolumeView]{Method: post, Path: "volumes", Status: 202, Bind: bindVolumeCreate,
				Render: volumeBody, Accepted: volumeAccepted}),
		def(Op{Verb: "list", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, p PF) ([]service.VolumeView, error) {
				vols, err := s.ListVolumes(ctx, r.AllProjects)
				if err == nil && len(vols) == 0 {
					s.EmptyCatalogNotice(ctx, p) // a lost catalog looks like an empty one
				}
				return vols, err
			}, volumeList.routes()...),
		def(Op{Verb: "show", Idempotent: true},
			byRef((*S).ShowVolume),
			Route[service.Ref, *service.VolumeView]{Method: get, Path: "volumes/{id}", Status: 200, Bind: byID, Render: volumeBody}),
		def(Op{Verb: "delete"},
			byRef((*S).DeleteVolume),
			Route[service.Ref, *service.VolumeView]{Method: del, Path: "volumes/{id}", Status: 202, Bind: byID}),

		def(Op{Verb: "backup-create", Background: true,
			Unknown: "a backup it left unfinished is marked error (fail_reason interrupted) by the catalog's next owner; check 'volback backup-list' and run backup-create again if needed"},
			(*S).CreateBackup,
			Route[service.BackupRequest, *service.BackupView]{Method: post, Path: "backups", Status: 202, Bind: bindBackupCreate, Render: backupCreated}),
		def(Op{Verb: "backup-list", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, p PF) ([]service.BackupView, error) {
				bs, err := s.ListBackups(ctx, r.Ref, r.AllProjects)
				if err == nil && len(bs) == 0 {
					s.EmptyCatalogNotice(ctx, p)
				}
				return bs, err
			}, backupList.routes()...),
		def(Op{Verb: "backup-show", Idempotent: true},
			byRef((*S).ShowBackup),
			backupRef{Method: get, Path: "backups/{id}", Status: 200, Bind: byID,
				Render: func(r *Request, b *service.BackupView) any { return map[string]any{"backup": backupDetail(r, b)} }},
			// An update (3.9) that changes nothing: volback keeps no backup
			// metadata, and openstack volume backup set sends it (empty)
			// with every --state.
			backupRef{Method: put, Path: "backups/{id}", Status: 200, Bind: bindBackupUpdate,
				Render: func(r *Request, b *service.BackupView) any { return map[string]any{"backup": backupSummary(r, b)} }}),
		def(Op{Verb: "backup-delete", Unknown: "a delete it started is finished by the next owner; check 'volback backup-list'"},
			call((*S).DeleteBackups),
			Route[service.DeleteRequest, []service.BackupView]{Method: del, Path: "backups/{id}", Status: 202,
				Bind: func(r *Request) (service.DeleteRequest, error) {
					return service.DeleteRequest{Refs: []string{r.Var("id")}}, nil
				}},
			Route[service.DeleteRequest, []service.BackupView]{Method: post, Path: "backups/{id}/action", Action: "os-force_delete", Status: 202,
				Bind: bindForceDelete}),
		def(Op{Verb: "backup-reset-state", Admin: "backup:backup-reset_status"},
			call((*S).ResetBackupState),
			Route[service.ResetStateRequest, *service.BackupView]{Method: post, Path: "backups/{id}/action", Action: "os-reset_status", Status: 202,
				Bind: bindResetStatus}),
		def(Op{Verb: "backup-restore", Background: true,
			Unknown: "a restore it left unfinished leaves the volume error_restoring; check 'volback list' and restore again if needed"},
			(*S).Restore,
			Route[service.RestoreRequest, *service.RestoreView]{Method: post, Path: "backups/{id}/restore", Status: 202, Bind: bindRestore,
				Render: func(_ *Request, v *service.RestoreView) any { return map[string]any{"restore": v} }}),
		def(Op{Verb: "backup-export", Idempotent: true},
			byRef((*S).ExportBackup),
			Route[service.Ref, *service.ExportView]{Method: get, Path: "backups/{id}/export_record", Status: 200, Bind: byID,
				Render: func(_ *Request, v *service.ExportView) any { return map[string]any{"backup-record": v} }}),
		def(Op{Verb: "backup-import", Admin: "backup:backup-import"},
			call((*S).ImportBackup),
			Route[service.ImportRequest, *service.BackupView]{Method: post, Path: "backups/import_record", Status: 201, Bind: bindImport,
				Render: func(r *Request, b *service.BackupView) any { return map[string]any{"backup": backupSummary(r, b)} }}),
		def(Op{Verb: "backup-locate", Idempotent: true},
			func(s *S, ctx context.Context, r service.LocateRequest, _ PF) (*service.ImageLocation, error) {
				return s.LocateImage(ctx, r)
			}),

		def(Op{Verb: "repo-gc", Admin: "backup:repo-gc", Unknown: "garbage collection is safe to run again: run repo-gc again"},
			call((*S).GC)),
		def(Op{Verb: "repo-repair", Admin: "backup:repo-repair"},
			call((*S).Repair)),
		def(Op{Verb: "repo-check", Admin: "backup:repo-check", Idempotent: true}, // its repairs, if any, are the same when repeated
			call((*S).Check)),
		def(Op{Verb: "repo-init", Admin: "backup:repo-init",
			Unknown: "a repository it created is registered or not: check 'volback repo-list'; repo-init of the same URL registers an existing repository"},
			call((*S).InitRepository)),
		def(Op{Verb: "repo-list", Idempotent: true},
			func(s *S, ctx context.Context, _ service.Ref, _ PF) ([]service.RepositoryView, error) {
				return s.ListRepositories(ctx)
			}),
		def(Op{Verb: "repo-show", Idempotent: true},
			byRef((*S).ShowRepository)),
		def(Op{Verb: "repo-key", Admin: "backup:repo-key", Unknown: "check the keys with 'volback repo-key list'"},
			call((*S).RepoKey)),
		def(Op{Verb: "backup-verify", Idempotent: true}, // its marks are the same when repeated
			(*S).VerifyBackups),
		def(Op{Verb: "catalog-rebuild", Admin: "backup:catalog-rebuild"},
			call((*S).RebuildCatalog)),

		def(Op{Verb: "quota-show", Idempotent: true},
			call((*S).ShowQuota),
			Route[service.QuotaRequest, *service.QuotaView]{Method: get, Path: "os-quota-sets/{project}", Status: 200, Bind: bindQuota,
				When: func(r *Request) bool { return !isUsage(r) }, Render: quotaBody}),
		def(Op{Verb: "quota-usage", Idempotent: true},
			call((*S).QuotaUsage),
			Route[service.QuotaRequest, []service.QuotaUsage]{Method: get, Path: "os-quota-sets/{project}", Status: 200, Bind: bindQuota,
				When: isUsage, Render: quotaUsageBody}),
		def(Op{Verb: "quota-update"}, // another project's quotas: admins only (checked in the service)
			call((*S).UpdateQuota),
			Route[service.QuotaRequest, *service.QuotaView]{Method: put, Path: "os-quota-sets/{project}", Status: 200, Bind: bindQuotaUpdate,
				Render: quotaBody}),

		def(Op{Verb: "snapshot-create"},
			call((*S).CreateSnapshot),
			Route[service.SnapshotRequest, *service.SnapshotView]{Method: post, Path: "snapshots", Status: 202, Bind: bindSnapshotCreate,
				Render: snapshotBody}),
		def(Op{Verb: "snapshot-list", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) ([]service.SnapshotView, error) {
				return s.ListSnapshots(ctx, r.Ref, r.AllProjects)
			}, snapshotList.routes()...),
		def(Op{Verb: "snapshot-show", Idempotent: true},
			byRef((*S).ShowSnapshot),
			Route[service.Ref, *service.SnapshotView]{Method: get, Path: "snapshots/{id}", Status: 200, Bind: byID, Render: snapshotBody}),
		def(Op{Verb: "snapshot-delete"},
			byRef((*S).DeleteSnapshot),
			Route[service.Ref, *service.SnapshotView]{Method: del, Path: "snapshots/{id}", Status: 202, Bind: byID}),

		def(Op{Verb: "service-list", Idempotent: true},
			func(s *S, ctx context.Context, _ service.Ref, _ PF) ([]service.ServiceView, error) {
				return s.ListServices(ctx)
			},
			Route[service.Ref, []service.ServiceView]{Method: get, Path: "os-services", Status: 200,
				Bind: func(*Request) (service.Ref, error) { return service.Ref{}, nil }, Render: servicesBody}),
		def(Op{Verb: "service-disable", Admin: "volume_extension:services:update"},
			func(s *S, ctx context.Context, r service.ServiceRequest, _ PF) (*service.ServiceView, error) {
				return s.SetServiceEnabled(ctx, r, false)
			}),
		def(Op{Verb: "service-enable", Admin: "volume_extension:services:update"},
			func(s *S, ctx context.Context, r service.ServiceRequest, _ PF) (*service.ServiceView, error) {
				return s.SetServiceEnabled(ctx, r, true)
			}),
	)
}
