package api

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/volback/volback/service"
)

// Backups: /v3/{project_id}/backups, as Cinder's.

type backupRef = Route[service.Ref, *service.BackupView]

// backupList is how backup lists are filtered, sorted and shown.
var backupList = listing[service.BackupView]{
	collection: "backups",
	fields: map[string]func(service.BackupView) any{
		"id": func(b service.BackupView) any { return b.ID }, "name": func(b service.BackupView) any { return b.Name },
		"status": func(b service.BackupView) any { return b.Status }, "volume_id": func(b service.BackupView) any { return b.VolumeID },
		"project_id":        func(b service.BackupView) any { return b.ProjectID },
		"availability_zone": func(b service.BackupView) any { return b.AvailabilityZone },
		"size":              func(b service.BackupView) any { return b.Size }, "object_count": func(b service.BackupView) any { return int64(b.ObjectCount) },
		"container":  func(b service.BackupView) any { return b.Container },
		"created_at": func(b service.BackupView) any { return b.CreatedAt }, "updated_at": func(b service.BackupView) any { return b.UpdatedAt },
	},
	aliases: map[string]string{"display_name": "name"},
	id:      func(b service.BackupView) string { return b.ID },
	summary: func(r *Request, b service.BackupView) map[string]any { return backupSummary(r, &b) },
	detail:  func(r *Request, b service.BackupView) map[string]any { return backupDetail(r, &b) },
}

func backupSummary(r *Request, b *service.BackupView) map[string]any {
	return map[string]any{"id": b.ID, "name": nullString(b.Name), "links": r.links("backups", b.ID)}
}

// backupDetail is Cinder's detailed backup, with the fields of the
// microversion asked for, and volback's own under "volback:".
func backupDetail(r *Request, b *service.BackupView) map[string]any {
	m := map[string]any{
		"id": b.ID, "status": b.Status, "size": b.Size, "object_count": b.ObjectCount,
		"availability_zone": b.AvailabilityZone, "container": b.Container,
		"created_at": cinderTime(b.CreatedAt), "updated_at": cinderTime(b.UpdatedAt),
		"name": nullString(b.Name), "description": b.Description, "fail_reason": b.FailReason,
		"volume_id": b.VolumeID, "links": r.links("backups", b.ID),
		"is_incremental": b.IsIncremental, "has_dependent_backups": b.HasDependentBackups,
		"snapshot_id": b.SnapshotID, "data_timestamp": cinderTime(b.DataTimestamp),
		"volback:size_bytes": b.SizeBytes, "volback:stored_bytes": b.StoredBytes, "volback:parent_id": b.ParentID,
		"volback:consistency": b.Consistency,
	}
	if r.AtLeast(18) && r.Admin() {
		m["os-backup-project-attr:project_id"] = b.ProjectID
	}
	if r.AtLeast(43) {
		m["metadata"] = map[string]string{}
	}
	if r.AtLeast(56) {
		m["user_id"] = nil // volback does not record who made a backup
	}
	if r.AtLeast(64) {
		m["encryption_key_id"] = nil
	}
	return m
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// backupListRoutes are GET backups and backups/detail.
func byID(r *Request) (service.Ref, error) { return service.Ref{Ref: r.Var("id")}, nil }

// bindBackupUpdate accepts an update that changes nothing (metadata {},
// as openstack volume backup set sends) and refuses the rest by name.
func bindBackupUpdate(r *Request) (service.Ref, error) {
	var b map[string]json.RawMessage
	if err := r.Body("backup", &b); err != nil {
		return service.Ref{}, err
	}
	for k, v := range b {
		switch {
		case k == "metadata" && (string(v) == "{}" || string(v) == "null"):
		case k == "metadata":
			return service.Ref{}, service.Errorf(service.ErrUsage, "Invalid input: volback keeps no backup metadata; send metadata {} or none")
		case k == "name" || k == "description":
			return service.Ref{}, service.Errorf(service.ErrUsage, "Invalid input: volback does not rename backups or change their description (it would differ from the backup's record in the repository); create a new backup with the name wanted")
		default:
			return service.Ref{}, service.Errorf(service.ErrUsage, "Invalid input: %s cannot be updated on a backup", k)
		}
	}
	return service.Ref{Ref: r.Var("id")}, nil
}

// backupCreateBody is POST backups' body member.
type backupCreateBody struct {
	VolumeID         string          `json:"volume_id"`
	Container        *string         `json:"container"`
	Name             *string         `json:"name"`
	Description      *string         `json:"description"`
	Incremental      bool            `json:"incremental"`
	Force            bool            `json:"force"`
	SnapshotID       *string         `json:"snapshot_id"`
	Metadata         json.RawMessage `json:"metadata"`
	AvailabilityZone *string         `json:"availability_zone"`
}

func bindBackupCreate(r *Request) (service.BackupRequest, error) {
	var b backupCreateBody
	if err := r.Body("backup", &b); err != nil {
		return service.BackupRequest{}, err
	}
	if b.VolumeID == "" {
		return service.BackupRequest{}, service.Errorf(service.ErrUsage, "Invalid input: backup.volume_id is required; name the volume to back up")
	}
	if len(b.Metadata) > 0 && string(b.Metadata) != "null" && string(b.Metadata) != "{}" {
		return service.BackupRequest{}, service.Errorf(service.ErrUsage, "Invalid input: volback does not keep backup metadata; omit metadata")
	}
	req := service.BackupRequest{Volume: b.VolumeID, Name: deStr(b.Name), Description: deStr(b.Description),
		Incremental: b.Incremental, Force: b.Force, SnapshotID: deStr(b.SnapshotID),
		Container: deStr(b.Container)} // a repository registered under that name (repo-init --name)
	if z := deStr(b.AvailabilityZone); z != "" {
		if !r.AtLeast(51) {
			return service.BackupRequest{}, service.Errorf(service.ErrUsage, "Invalid input: availability_zone in a backup needs microversion 3.51 or later (%s: volume 3.51)", versionHeader)
		}
		req.AvailabilityZone = z
	}
	return req, nil
}

func deStr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// backupCreated is the 202 of POST backups: Cinder's summary, plus the
// status (creating) and volume.
func backupCreated(r *Request, b *service.BackupView) any {
	m := backupSummary(r, b)
	m["status"], m["volume_id"] = b.Status, b.VolumeID
	return map[string]any{"backup": m}
}

type restoreBody struct {
	VolumeID         *string `json:"volume_id"`
	Name             *string `json:"name"`
	VolumeType       *string `json:"volume_type"`
	AvailabilityZone *string `json:"availability_zone"`
}

func bindRestore(r *Request) (service.RestoreRequest, error) {
	var b restoreBody
	if err := r.Body("restore", &b); err != nil {
		return service.RestoreRequest{}, err
	}
	if deStr(b.VolumeType) != "" {
		return service.RestoreRequest{}, service.Errorf(service.ErrUsage, "Invalid input: volback has no volume types; omit volume_type")
	}
	req := service.RestoreRequest{Backup: r.Var("id"), AvailabilityZone: deStr(b.AvailabilityZone)}
	if v := deStr(b.VolumeID); v != "" {
		req.Volume = v // Cinder ignores the name when restoring into a volume
	} else {
		req.Name = deStr(b.Name)
	}
	return req, nil
}

type recordBody struct {
	BackupService string `json:"backup_service"`
	BackupURL     string `json:"backup_url"`
}

func bindImport(r *Request) (service.ImportRequest, error) {
	var b recordBody
	if err := r.Body("backup-record", &b); err != nil {
		return service.ImportRequest{}, err
	}
	if b.BackupService == "" || b.BackupURL == "" {
		return service.ImportRequest{}, service.Errorf(service.ErrUsage, "Invalid input: backup-record needs backup_service and backup_url, as backup-export printed them")
	}
	return service.ImportRequest(b), nil
}

func bindForceDelete(r *Request) (service.DeleteRequest, error) {
	return service.DeleteRequest{Refs: []string{r.Var("id")}, Force: true}, nil
}

func bindResetStatus(r *Request) (service.ResetStateRequest, error) {
	var b struct {
		Status string `json:"status"`
	}
	if err := r.Action(&b); err != nil {
		return service.ResetStateRequest{}, err
	}
	if b.Status == "" {
		return service.ResetStateRequest{}, service.Errorf(service.ErrUsage, "Must specify 'status': os-reset_status takes {\"status\": \"available\"} or {\"status\": \"error\"}")
	}
	return service.ResetStateRequest{Ref: r.Var("id"), State: strings.ToLower(b.Status)}, nil
}

// isUsage picks the quota route that answers ?usage=True.
func isUsage(r *Request) bool {
	v, err := r.Flag("usage")
	return err == nil && v
}

// filterServices applies os-services' host and binary filters.
func filterServices(r *Request, svcs []service.ServiceView) []service.ServiceView {
	host, binary := r.Query("host"), r.Query("binary")
	return slices.DeleteFunc(slices.Clone(svcs), func(s service.ServiceView) bool {
		return (host != "" && s.Host != host) || (binary != "" && s.Binary != binary)
	})
}
