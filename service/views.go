package service

import (
	"os"
	"time"

	"github.com/volback/volback/index"
)

// VolumeView is a volume as printed, with Cinder's field names.
type VolumeView struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	Status           string    `json:"status"`
	Size             int64     `json:"size"`
	SizeBytes        int64     `json:"size_bytes"`
	Source           string    `json:"source"`
	Path             string    `json:"path"`
	Driver           string    `json:"driver"`
	AvailabilityZone string    `json:"availability_zone"`
	ProjectID        string    `json:"project_id"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	// IncompleteContent says why the volume's content is incomplete (a
	// restore into it was cancelled); null when it is not.
	IncompleteContent *string `json:"incomplete_content"`
}

// BackupView is a backup as printed, with Cinder's field names.
type BackupView struct {
	ID                  string     `json:"id"`
	Name                string     `json:"name"`
	Description         *string    `json:"description"`
	Status              string     `json:"status"`
	VolumeID            string     `json:"volume_id"`
	VolumeName          string     `json:"volume_name"`
	Size                int64      `json:"size"`
	SizeBytes           int64      `json:"size_bytes"`
	ObjectCount         int        `json:"object_count"`
	StoredBytes         int64      `json:"stored_bytes"`
	AvailabilityZone    string     `json:"availability_zone"`
	Container           string     `json:"container"`
	CreatedAt           time.Time  `json:"created_at"`
	UpdatedAt           time.Time  `json:"updated_at"`
	IsIncremental       bool       `json:"is_incremental"`
	HasDependentBackups bool       `json:"has_dependent_backups"`
	ParentID            *string    `json:"parent_id"`
	SnapshotID          *string    `json:"snapshot_id"`
	DataTimestamp       time.Time  `json:"data_timestamp"`
	FailReason          *string    `json:"fail_reason"`
	ProjectID           string     `json:"project_id"`
	Damaged             bool       `json:"damaged"`
	DamageReason        *string    `json:"damage_reason,omitempty"`
	ChangeTracking      *string    `json:"change_tracking,omitempty"`
	DeletedAt           *time.Time `json:"deleted_at,omitempty"`
	Consistency         *string    `json:"consistency"`
	ConsistencyDetail   *string    `json:"consistency_detail"`
}

// RestoreView is what backup-restore prints (Cinder's restore response).
type RestoreView struct {
	BackupID   string `json:"backup_id"`
	VolumeID   string `json:"volume_id"`
	VolumeName string `json:"volume_name"`
}

// GiB rounds a byte count up to whole GiB, as Cinder sizes are.
func GiB(b int64) int64 { return (b + 1<<30 - 1) >> 30 }

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func volumeView(v *index.Volume) VolumeView {
	return VolumeView{ID: v.ID, Name: v.Name, Status: v.Status, Size: GiB(v.Size), SizeBytes: v.Size,
		Source: v.Path, Path: v.Path, Driver: v.Driver, AvailabilityZone: v.AvailabilityZone,
		ProjectID: v.ProjectID, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt, IncompleteContent: nullable(v.Incomplete)}
}

// parents is the set of backups that have a dependent (non-error) child.
func parents(all []*index.Backup) map[string]bool {
	p := map[string]bool{}
	for _, o := range all {
		if o.ParentID != "" && o.Status != index.StatusError {
			p[o.ParentID] = true
		}
	}
	return p
}

// backupView is b as printed; parents (from parents()) says whether b has
// dependent backups.
func backupView(b *index.Backup, parents map[string]bool) BackupView {
	dep := parents[b.ID]
	return BackupView{ID: b.ID, Name: b.Name, Description: nullable(b.Description), Status: b.Status,
		VolumeID: b.VolumeID, VolumeName: b.VolumeName, Size: GiB(b.SizeBytes), SizeBytes: b.SizeBytes,
		ObjectCount: b.ObjectCount, StoredBytes: b.StoredBytes, AvailabilityZone: b.AvailabilityZone,
		Container: b.Container, CreatedAt: b.CreatedAt, UpdatedAt: b.UpdatedAt,
		IsIncremental: b.IsIncremental, HasDependentBackups: dep, ParentID: nullable(b.ParentID),
		SnapshotID: nullable(b.SnapshotID), DataTimestamp: b.DataTimestamp,
		FailReason: nullable(b.FailReason), ProjectID: b.ProjectID,
		Consistency: nullable(b.Consistency), ConsistencyDetail: nullable(b.ConsistencyDetail),
		Damaged: b.Damaged, DamageReason: nullable(b.DamageReason), ChangeTracking: nullable(b.ChangeTracking)}
}

// Consistency of a backup read live without a snapshot from a volume not
// in use (docs/CLI.md), besides consistency.go's values: only a volume
// nobody writes during its backup is backed up as of one moment.
const (
	// ConsistencyUnchanged: the image file's size and modification time
	// were the same after the read as before it.
	ConsistencyUnchanged = "unchanged-during-read"
	// ConsistencyWritten: the image file changed while it was read: the
	// backup mixes data from different moments and is not crash-consistent.
	ConsistencyWritten = "written-during-read"
	// ConsistencyUnknown: a block device, whose writes volback cannot see;
	// if it was written during the backup, the backup is not crash-consistent.
	ConsistencyUnknown = "unknown-live-read"
)

// sourceStamp is what tells whether an image file changed during a read.
type sourceStamp struct {
	regular bool
	size    int64
	mtime   time.Time
}

func statSource(path string) sourceStamp {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return sourceStamp{}
	}
	return sourceStamp{regular: true, size: fi.Size(), mtime: fi.ModTime()}
}

// liveConsistency says what a live read (no snapshot) of a volume saw.
func liveConsistency(before, after sourceStamp) (consistency, detail string) {
	switch {
	case !before.regular || !after.regular:
		return ConsistencyUnknown, "read live, without a snapshot, from a device whose writes volback cannot see: consistent only if nothing wrote to it during the backup (--force reads a snapshot)"
	case before == after:
		return ConsistencyUnchanged, "read live, without a snapshot; the image file's size and modification time did not change while it was read"
	}
	return ConsistencyWritten, "read live, without a snapshot, and the image file changed while it was read: not crash-consistent (back it up with --force, through a snapshot, or while nothing writes to it)"
}
