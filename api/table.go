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

// The operations of the service: one entry per verb, with its policy,
// idempotency, what to tell a caller who lost the owner mid-call, and the
// Cinder v3 routes that reach it (cinder_*.go).
func init() {
	register(
		def(Op{Verb: "manage", Admin: "volume_extension:volume_manage"}, // reads any path as the owner: members use create
			func(s *S, ctx context.Context, r service.ManageRequest, _ PF) (*service.VolumeView, error) {
				return s.Manage(ctx, r)
			}),
		def(Op{Verb: "create", Background: true,
			Unknown: "a volume it left unfinished is in 'volback list' (a restore into it ends error_restoring); check and delete or create it again if needed"},
			func(s *S, ctx context.Context, r service.CreateRequest, p PF) (*service.VolumeView, error) {
				return s.CreateVolume(ctx, r, p)
			}),
		def(Op{Verb: "list", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) ([]service.VolumeView, error) {
				return s.ListVolumes(ctx, r.AllProjects)
			}),
		def(Op{Verb: "show", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) (*service.VolumeView, error) {
				return s.ShowVolume(ctx, r.Ref)
			}),
		def(Op{Verb: "delete"},
			func(s *S, ctx context.Context, r service.Ref, _ PF) (*service.VolumeView, error) {
				return s.DeleteVolume(ctx, r.Ref)
			}),

		def(Op{Verb: "backup-create", Background: true,
			Unknown: "a backup it left unfinished is marked error (fail_reason interrupted) by the catalog's next owner; check 'volback backup-list' and run backup-create again if needed"},
			func(s *S, ctx context.Context, r service.BackupRequest, p PF) (*service.BackupView, error) {
				return s.CreateBackup(ctx, r, p)
			}),
		def(Op{Verb: "backup-list", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) ([]service.BackupView, error) {
				return s.ListBackups(ctx, r.Ref, r.AllProjects)
			}),
		def(Op{Verb: "backup-show", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) (*service.BackupView, error) {
				return s.ShowBackup(ctx, r.Ref)
			}),
		def(Op{Verb: "backup-delete", Unknown: "a delete it started is finished by the next owner; check 'volback backup-list'"},
			func(s *S, ctx context.Context, r service.DeleteRequest, _ PF) ([]service.BackupView, error) {
				return s.DeleteBackups(ctx, r)
			}),
		def(Op{Verb: "backup-reset-state", Admin: "backup:backup-reset_status"},
			func(s *S, ctx context.Context, r service.ResetStateRequest, _ PF) (*service.BackupView, error) {
				return s.ResetBackupState(ctx, r)
			}),
		def(Op{Verb: "backup-restore", Background: true,
			Unknown: "a restore it left unfinished leaves the volume error_restoring; check 'volback list' and restore again if needed"},
			func(s *S, ctx context.Context, r service.RestoreRequest, p PF) (*service.RestoreView, error) {
				return s.Restore(ctx, r, p)
			}),
		def(Op{Verb: "backup-export", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) (*service.ExportView, error) {
				return s.ExportBackup(ctx, r.Ref)
			}),
		def(Op{Verb: "backup-import", Admin: "backup:backup-import"},
			func(s *S, ctx context.Context, r service.ImportRequest, _ PF) (*service.BackupView, error) {
				return s.ImportBackup(ctx, r)
			}),
		def(Op{Verb: "backup-locate", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) (*service.ImageLocation, error) {
				return s.LocateImage(ctx, r.Ref)
			}),

		def(Op{Verb: "repo-gc", Admin: "backup:repo-gc", Unknown: "garbage collection is safe to run again: run repo-gc again"},
			func(s *S, ctx context.Context, r service.Ref, _ PF) ([]service.GCReport, error) {
				return s.GC(ctx, r.Zone)
			}),
		def(Op{Verb: "repo-check", Admin: "backup:repo-check", Idempotent: true}, // its repairs, if any, are the same when repeated
			func(s *S, ctx context.Context, r service.CheckRequest, _ PF) ([]service.CheckReport, error) {
				return s.Check(ctx, r)
			}),
		def(Op{Verb: "catalog-rebuild", Admin: "backup:catalog-rebuild"},
			func(s *S, ctx context.Context, r service.RebuildRequest, _ PF) (*service.RebuildReport, error) {
				return s.RebuildCatalog(ctx, r)
			}),

		def(Op{Verb: "quota-show", Idempotent: true},
			func(s *S, ctx context.Context, r service.QuotaRequest, _ PF) (*service.QuotaView, error) {
				return s.ShowQuota(ctx, r)
			}),
		def(Op{Verb: "quota-usage", Idempotent: true},
			func(s *S, ctx context.Context, r service.QuotaRequest, _ PF) ([]service.QuotaUsage, error) {
				return s.QuotaUsage(ctx, r)
			}),
		def(Op{Verb: "quota-update"}, // another project's quotas: admins only (checked in the service)
			func(s *S, ctx context.Context, r service.QuotaRequest, _ PF) (*service.QuotaView, error) {
				return s.UpdateQuota(ctx, r)
			}),

		def(Op{Verb: "snapshot-create"},
			func(s *S, ctx context.Context, r service.SnapshotRequest, _ PF) (*service.SnapshotView, error) {
				return s.CreateSnapshot(ctx, r)
			}),
		def(Op{Verb: "snapshot-list", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) ([]service.SnapshotView, error) {
				return s.ListSnapshots(ctx, r.Ref, r.AllProjects)
			}),
		def(Op{Verb: "snapshot-show", Idempotent: true},
			func(s *S, ctx context.Context, r service.Ref, _ PF) (*service.SnapshotView, error) {
				return s.ShowSnapshot(ctx, r.Ref)
			}),
		def(Op{Verb: "snapshot-delete"},
			func(s *S, ctx context.Context, r service.Ref, _ PF) (*service.SnapshotView, error) {
				return s.DeleteSnapshot(ctx, r.Ref)
			}),

		def(Op{Verb: "service-list", Idempotent: true},
			func(s *S, ctx context.Context, _ service.Ref, _ PF) ([]service.ServiceView, error) {
				return s.ListServices(ctx)
			}),
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
