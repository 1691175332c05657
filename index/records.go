package index

import (
	"errors"
	"time"

	"github.com/volback/volback/chunkstore"
)

// SchemaVersion is the catalog layout version stored under key "schema".
// Version 2: a backup's refs_applied may count a list relative to its
// refs_base, which a volback of version 1 would misread (its deletes would
// release the whole manifest); version 1 catalogs count every backup in
// full, so they are upgraded in place when opened.
const SchemaVersion = 2

// ErrNotFound is returned (wrapped) when a record does not exist.
var ErrNotFound = errors.New("not found")

// ErrTxnTooBig is returned when one transaction holds too many updates;
// callers split the work into batches (see MaxBatch).
var ErrTxnTooBig = errors.New("transaction too big")

// ErrLocked is returned (wrapped) by Open when another process owns the
// catalog; the CLI then talks to that owner over its socket.
var ErrLocked = errors.New("catalog locked by another process")

// ErrSchema is returned (wrapped) by Open when the catalog was written with
// a layout version this build does not read.
var ErrSchema = errors.New("unsupported catalog schema version")

// MaxBatch is how many chunk updates one transaction can safely hold.
// With the options set in Open a transaction may hold about 4,600 chunk
// puts with a 36-byte repository id (Badger's limit is 15% of the 4 MiB
// MemTableSize); 2000 leaves room for the backup record and longer ids.
// TestMaxBatchFits and TestUpdateAtomic check the margin.
const MaxBatch = 2000

// Volume statuses and backup statuses follow Cinder.
const (
	StatusAvailable       = "available"
	StatusInUse           = "in-use"
	StatusBackingUp       = "backing-up"
	StatusRestoringBackup = "restoring-backup"
	StatusError           = "error"
	StatusCreating        = "creating"
	StatusDeleting        = "deleting"
	StatusRestoring       = "restoring"
	StatusErrorRestoring  = "error_restoring"
	StatusErrorDeleting   = "error_deleting"
)

// Volume is a registered block source/target.
type Volume struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	Status           string    `json:"status"`
	Size             int64     `json:"size_bytes"`
	Path             string    `json:"path"`   // file, device or rbd:// URL
	Driver           string    `json:"driver"` // "file", "rbd"
	Owned            bool      `json:"owned"`  // created by volback: delete removes the file
	AvailabilityZone string    `json:"availability_zone"`
	ProjectID        string    `json:"project_id"`
	PrevStatus       string    `json:"prev_status,omitempty"` // status to return to after a job
	Placeholder      bool      `json:"placeholder,omitempty"` // rebuilt from a record; source unknown
	Incomplete       string    `json:"incomplete,omitempty"`  // why the content is incomplete (a cancelled restore)
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// Backup is a backup's catalog record.
type Backup struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	Description      string `json:"description"`
	Status           string `json:"status"`
	FailReason       string `json:"fail_reason"`
	VolumeID         string `json:"volume_id"`
	VolumeName       string `json:"volume_name"`
	ParentID         string `json:"parent_id"`
	SnapshotID       string `json:"snapshot_id"`
	IsIncremental    bool   `json:"is_incremental"`
	SizeBytes        int64  `json:"size_bytes"` // volume bytes covered
	ObjectCount      int    `json:"object_count"`
	StoredBytes      int64  `json:"stored_bytes"` // new bytes this backup added to the repository
	AvailabilityZone string `json:"availability_zone"`
	Container        string `json:"container"`     // repository URL
	RepositoryID     string `json:"repository_id"` // repository config id
	ProjectID        string `json:"project_id"`
	ManifestDigest   string `json:"manifest_digest"`
	RefsApplied      int    `json:"refs_applied"`            // references counted: a prefix of the reference list, in its mode (crash recovery)
	RefsReleased     int    `json:"refs_released,omitempty"` // of those, released again: a prefix (a delete or rollback under way)
	// RefsBase is the backup whose counted references cover the chunks
	// this one shares with it at the same segment slot: this one's
	// reference list is then only the rest (relative to the base, see
	// docs/FORMAT.md). "" counts the whole manifest. A base is never
	// released while a backup counts against it.
	RefsBase string `json:"refs_base,omitempty"`
	// RefsTotal is the length of the reference list in its mode (set when
	// the backup completes; with RefsBase "" it equals ObjectCount).
	RefsTotal     int    `json:"refs_total,omitempty"`
	MissingParent bool   `json:"missing_parent,omitempty"` // incremental imported before its parent
	Imported      bool   `json:"imported,omitempty"`       // registered by backup-import/catalog-rebuild: rollback keeps the repository objects
	Damaged       bool   `json:"damaged,omitempty"`        // needs a chunk found missing or corrupt (see Chunk.Lost)
	CheckLost     bool   `json:"check_lost,omitempty"`     // chunks were found lost while it ran: it checks its own before it becomes available
	DamageReason  string `json:"damage_reason,omitempty"`
	// Consistency says how the data was read (crash-consistent through a
	// snapshot, or a live read); ConsistencyDetail says how, in words.
	Consistency       string `json:"consistency,omitempty"`
	ConsistencyDetail string `json:"consistency_detail,omitempty"`
	// TrackingSnapshot is the driver's name of the volume snapshot this
	// backup's data equals, kept so the next incremental reads only what
	// changed since it (RBD: volback.<backup-id>).
	TrackingSnapshot string `json:"tracking_snapshot,omitempty"`
	// ChangeTracking says how an incremental found what to read: the
	// changes since its parent's snapshot, or a full read and why.
	ChangeTracking string    `json:"change_tracking,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	DataTimestamp  time.Time `json:"data_timestamp"`
}

// RefsLen is the length of b's reference list in its mode: what a fully
// counted backup has in RefsApplied. Records from before relative
// counting have no RefsTotal: their list is the whole manifest's.
func (b *Backup) RefsLen() int {
	if b.RefsBase == "" && b.RefsTotal == 0 {
		return b.ObjectCount
	}
	return b.RefsTotal
}

// FullyCounted reports whether the catalog counts b's whole reference
// list (in its mode) and releases none of it.
func (b *Backup) FullyCounted() bool {
	return b.RefsApplied == b.RefsLen() && b.RefsReleased == 0
}

// Chunk is one chunk-index entry: where the chunk lives and how many
// backups reference it.
type Chunk struct {
	chunkstore.Location
	Refs uint32
}

// Lost reports whether the entry marks a chunk that a read or check found
// missing or corrupt: its pack id is all zeros. The entry keeps counting
// the references of the backups that need it (they are damaged), but it
// is no location: a backup that meets the chunk again stores it anew and
// puts the new location here, which heals those backups.
func (c Chunk) Lost() bool { return c.Pack == chunkstore.ID{} }

// MarkLost turns c into a lost entry, keeping its references.
func (c *Chunk) MarkLost() { c.Location = chunkstore.Location{} }
