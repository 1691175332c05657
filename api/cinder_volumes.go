package api

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/volback/volback/service"
)

// Volumes, snapshots, quotas and services, as Cinder's.

var volumeList = listing[service.VolumeView]{
	collection: "volumes",
	fields: map[string]func(service.VolumeView) any{
		"id": func(v service.VolumeView) any { return v.ID }, "name": func(v service.VolumeView) any { return v.Name },
		"status": func(v service.VolumeView) any { return v.Status }, "size": func(v service.VolumeView) any { return v.Size },
		"project_id":        func(v service.VolumeView) any { return v.ProjectID },
		"availability_zone": func(v service.VolumeView) any { return v.AvailabilityZone },
		"created_at":        func(v service.VolumeView) any { return v.CreatedAt }, "updated_at": func(v service.VolumeView) any { return v.UpdatedAt },
	},
	aliases: map[string]string{"display_name": "name"},
	// cinder list sends these empty or as defaults; volback has no such
	// properties to filter on.
	ignored: []string{"metadata", "glance_metadata", "bootable"},
	id:      func(v service.VolumeView) string { return v.ID },
	summary: func(r *Request, v service.VolumeView) map[string]any {
		return map[string]any{"id": v.ID, "name": nullString(v.Name), "links": r.links("volumes", v.ID)}
	},
	detail: func(r *Request, v service.VolumeView) map[string]any { return volumeDetail(r, &v) },
}

// volumeDetail is Cinder's detailed volume. volback's volumes are not
// attached to servers, have no types, images or encryption: those fields
// hold Cinder's values for "none".
func volumeDetail(r *Request, v *service.VolumeView) map[string]any {
	m := map[string]any{
		"id": v.ID, "name": nullString(v.Name), "status": v.Status, "size": v.Size,
		"availability_zone": v.AvailabilityZone, "created_at": cinderTime(v.CreatedAt), "updated_at": cinderTime(v.UpdatedAt),
		"description": nil, "volume_type": nil, "snapshot_id": nil, "source_volid": nil, "metadata": map[string]string{},
		"links": r.links("volumes", v.ID), "user_id": nil, "bootable": "false", "encrypted": false,
		"replication_status": nil, "consistencygroup_id": nil, "multiattach": false, "attachments": []any{},
		"migration_status": nil, "volback:size_bytes": v.SizeBytes, "volback:driver": v.Driver,
		"volback:incomplete_content": v.IncompleteContent,
	}
	if r.Admin() {
		m["os-vol-tenant-attr:tenant_id"] = v.ProjectID
		m["os-vol-host-attr:host"] = "volback@" + v.Driver
		m["os-vol-mig-status-attr:migstat"] = nil
		m["os-vol-mig-status-attr:name_id"] = nil
		m["volback:path"] = v.Path // a path on the owner's host: admins only
	}
	if r.AtLeast(13) {
		m["group_id"] = nil
	}
	if r.AtLeast(21) && r.Admin() {
		m["provider_id"] = nil
	}
	if r.AtLeast(48) {
		m["service_uuid"], m["shared_targets"] = nil, false
	}
	if r.AtLeast(61) && r.Admin() {
		m["cluster_name"] = nil
	}
	if r.AtLeast(63) {
		m["volume_type_id"] = nil
	}
	if r.AtLeast(64) {
		m["encryption_key_id"] = nil
	}
	if r.AtLeast(65) {
		m["consumes_quota"] = true
	}
	return m
}

// volumeCreateBody is POST volumes' body member: what volback serves,
// and what it refuses when given.
type volumeCreateBody struct {
	Size             *int64  `json:"size"`
	Name             *string `json:"name"`
	Description      *string `json:"description"`
	BackupID         *string `json:"backup_id"`
	AvailabilityZone *string `json:"availability_zone"`

	SnapshotID  *string         `json:"snapshot_id"`
	SourceVolID *string         `json:"source_volid"`
	ImageRef    *string         `json:"imageRef"`
	VolumeType  *string         `json:"volume_type"`
	Metadata    json.RawMessage `json:"metadata"`
	Multiattach bool            `json:"multiattach"`
	GroupID     *string         `json:"group_id"`
	CGID        *string         `json:"consistencygroup_id"`
}

func bindVolumeCreate(r *Request) (service.CreateRequest, error) {
	var b volumeCreateBody
	if err := r.Body("volume", &b); err != nil {
		return service.CreateRequest{}, err
	}
	for _, u := range []struct {
		name string
		set  bool
	}{{"snapshot_id", deStr(b.SnapshotID) != ""}, {"source_volid", deStr(b.SourceVolID) != ""}, {"imageRef", deStr(b.ImageRef) != ""},
		{"volume_type", deStr(b.VolumeType) != ""}, {"multiattach", b.Multiattach}, {"group_id", deStr(b.GroupID) != ""},
		{"consistencygroup_id", deStr(b.CGID) != ""},
		{"metadata", len(b.Metadata) > 0 && string(b.Metadata) != "null" && string(b.Metadata) != "{}"}} {
		if u.set {
			return service.CreateRequest{}, service.Errorf(service.ErrUsage, "Invalid input: volback creates empty volumes and volumes from backups (backup_id) only; it does not serve %s", u.name)
		}
	}
	req := service.CreateRequest{Name: deStr(b.Name), AvailabilityZone: deStr(b.AvailabilityZone)}
	if id := deStr(b.BackupID); id != "" {
		if !r.AtLeast(47) {
			return service.CreateRequest{}, service.Errorf(service.ErrUsage, "Invalid input: backup_id in a volume needs microversion 3.47 or later (%s: volume 3.47)", versionHeader)
		}
		req.BackupID = id
	}
	switch {
	case b.Size != nil && *b.Size > 0:
		req.Size = *b.Size << 30
	case b.Size != nil && *b.Size < 0, b.Size == nil && req.BackupID == "", b.Size != nil && *b.Size == 0 && req.BackupID == "":
		return service.CreateRequest{}, service.Errorf(service.ErrUsage, "Invalid input: size must be a positive number of GiB (or omitted with backup_id, to take the backup's size)")
	}
	if req.Name == "" { // volback names every volume; Cinder's may be nameless
		if req.BackupID != "" {
			req.Name = "restore_backup_" + req.BackupID
		} else {
			req.Name = "volume-" + uuid.NewString()[:8]
		}
	}
	return req, nil
}

// volumeAccepted shows the volume a create from a backup made, which the
// service accepted as a restore into it.
func volumeAccepted(r *Request, s *service.Service, v any) (*service.VolumeView, error) {
	rv, ok := v.(*service.RestoreView)
	if !ok {
		return nil, fmt.Errorf("create accepted its job as a %T: volback's route table is wrong", v)
	}
	return s.ShowVolume(r.ctx, rv.VolumeID)
}

func volumeBody(r *Request, v *service.VolumeView) any {
	return map[string]any{"volume": volumeDetail(r, v)}
}

// Snapshots.

var snapshotList = listing[service.SnapshotView]{
	collection: "snapshots",
	fields: map[string]func(service.SnapshotView) any{
		"id": func(s service.SnapshotView) any { return s.ID }, "name": func(s service.SnapshotView) any { return s.Name },
		"status": func(s service.SnapshotView) any { return s.Status }, "volume_id": func(s service.SnapshotView) any { return s.VolumeID },
		"project_id": func(s service.SnapshotView) any { return s.ProjectID }, "size": func(s service.SnapshotView) any { return s.Size },
		"created_at": func(s service.SnapshotView) any { return s.CreatedAt }, "updated_at": func(s service.SnapshotView) any { return s.UpdatedAt },
	},
	aliases: map[string]string{"display_name": "name"},
	ignored: []string{"metadata"},
	id:      func(s service.SnapshotView) string { return s.ID },
	summary: func(r *Request, s service.SnapshotView) map[string]any { return snapshotDetail(r, &s) }, // Cinder's summary is its detail
	detail:  func(r *Request, s service.SnapshotView) map[string]any { return snapshotDetail(r, &s) },
}

func snapshotDetail(r *Request, s *service.SnapshotView) map[string]any {
	m := map[string]any{
		"id": s.ID, "name": s.Name, "description": s.Description, "status": s.Status, "size": s.Size,
		"volume_id": s.VolumeID, "created_at": cinderTime(s.CreatedAt), "updated_at": cinderTime(s.UpdatedAt),
		"metadata": map[string]string{}, "os-extended-snapshot-attributes:progress": "100%",
		"volback:method": s.Method, "volback:backup_id": s.BackupID, "volback:size_bytes": s.SizeBytes,
	}
	if r.Admin() {
		m["os-extended-snapshot-attributes:project_id"] = s.ProjectID
	}
	if r.AtLeast(14) {
		m["group_snapshot_id"] = nil
	}
	if r.AtLeast(41) {
		m["user_id"] = nil
	}
	if r.AtLeast(65) {
		m["consumes_quota"] = true
	}
	return m
}

func bindSnapshotCreate(r *Request) (service.SnapshotRequest, error) {
	var b struct {
		VolumeID    string          `json:"volume_id"`
		Name        *string         `json:"name"`
		Description *string         `json:"description"`
		Force       json.RawMessage `json:"force"`
		Metadata    json.RawMessage `json:"metadata"`
	}
	if err := r.Body("snapshot", &b); err != nil {
		return service.SnapshotRequest{}, err
	}
	if b.VolumeID == "" {
		return service.SnapshotRequest{}, service.Errorf(service.ErrUsage, "Invalid input: snapshot.volume_id is required; name the volume to snapshot")
	}
	force := false
	if len(b.Force) > 0 && string(b.Force) != "null" {
		s := strings.Trim(string(b.Force), `"`) // cinderclient sends "True"/"False" as strings
		var err error
		if force, err = parseBool("force", s); err != nil {
			return service.SnapshotRequest{}, err
		}
	}
	if r.AtLeast(66) {
		force = true // 3.66: snapshots of in-use volumes need no force flag
	}
	return service.SnapshotRequest{Volume: b.VolumeID, Name: deStr(b.Name), Description: deStr(b.Description), Force: force}, nil
}

func snapshotBody(r *Request, s *service.SnapshotView) any {
	return map[string]any{"snapshot": snapshotDetail(r, s)}
}

// Quotas: volback limits backups and backup_gigabytes; the other quotas
// of Cinder do not exist here and are not shown.

func bindQuota(r *Request) (service.QuotaRequest, error) {
	if _, err := r.Flag("usage"); err != nil {
		return service.QuotaRequest{}, err
	}
	return service.QuotaRequest{Project: r.Var("project")}, nil
}

func bindQuotaUpdate(r *Request) (service.QuotaRequest, error) {
	var b map[string]json.RawMessage
	if err := r.Body("quota_set", &b); err != nil {
		return service.QuotaRequest{}, err
	}
	req := service.QuotaRequest{Project: r.Var("project")}
	var bad []string
	for k, raw := range b {
		var dst **int64
		switch k {
		case "tenant_id", "skip_validation":
			continue
		case "backups":
			dst = &req.Backups
		case "backup_gigabytes":
			dst = &req.BackupGigabytes
		default:
			if string(raw) != "null" {
				bad = append(bad, k)
			}
			continue
		}
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			var s string // some clients send numbers as strings
			if json.Unmarshal(raw, &s) != nil {
				return req, service.Errorf(service.ErrUsage, "Invalid input for quota %s: %s is not an integer", k, raw)
			}
			n = json.Number(s)
		}
		v, err := n.Int64()
		if err != nil {
			return req, service.Errorf(service.ErrUsage, "Invalid input for quota %s: %q is not an integer", k, n)
		}
		*dst = &v
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return req, service.Errorf(service.ErrUsage, "Bad key(s) in quota_set: %s: volback limits backups and backup_gigabytes only", strings.Join(bad, ", "))
	}
	if req.Backups == nil && req.BackupGigabytes == nil {
		return req, service.Errorf(service.ErrUsage, "Must supply at least one quota field to update: backups or backup_gigabytes")
	}
	return req, nil
}

func quotaBody(r *Request, q *service.QuotaView) any {
	return map[string]any{"quota_set": map[string]any{"id": q.ProjectID, "backups": q.Backups, "backup_gigabytes": q.BackupGigabytes}}
}

func quotaUsageBody(r *Request, us []service.QuotaUsage) any {
	m := map[string]any{"id": r.Var("project")}
	for _, u := range us {
		m[u.Type] = map[string]any{"limit": u.Limit, "in_use": u.InUse, "reserved": u.Reserved, "allocated": 0}
	}
	return map[string]any{"quota_set": m}
}

// Services.

func servicesBody(r *Request, svcs []service.ServiceView) any {
	out := []map[string]any{}
	for _, s := range filterServices(r, svcs) {
		m := map[string]any{"binary": s.Binary, "host": s.Host, "zone": s.Zone, "status": s.Status, "state": s.State,
			"updated_at": nil, "disabled_reason": s.DisabledReason, "volback:repository": s.Repository, "volback:reason": s.Reason}
		if s.UpdatedAt != nil {
			m["updated_at"] = cinderTime(*s.UpdatedAt)
		}
		if r.AtLeast(7) {
			m["cluster"] = nil
		}
		if r.AtLeast(49) && s.Binary == "volback-volume" {
			m["backend_state"] = s.State
		}
		out = append(out, m)
	}
	return map[string]any{"services": out}
}
