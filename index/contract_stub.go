// Package index is the catalog: volumes, backups and chunk reference counts
// in a Badger database under the volback home (key layout in doc below).
package index

// CONTRACT STUB: the index helper replaces this file with the real
// implementation, keeping every exported name and signature below.

import (
	"errors"
	"time"

	"github.com/volback/volback/chunkstore"
)

// SchemaVersion is the catalog layout version stored under key "schema".
const SchemaVersion = 1

// ErrNotFound is returned (wrapped) when a record does not exist.
var ErrNotFound = errors.New("not found")

// ErrTxnTooBig is returned when one transaction holds too many updates;
// callers split the work into batches (see MaxBatch).
var ErrTxnTooBig = errors.New("transaction too big")

// MaxBatch is how many chunk updates one transaction can safely hold.
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
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// Backup is a backup's catalog record.
type Backup struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	Description      string    `json:"description"`
	Status           string    `json:"status"`
	FailReason       string    `json:"fail_reason"`
	VolumeID         string    `json:"volume_id"`
	VolumeName       string    `json:"volume_name"`
	ParentID         string    `json:"parent_id"`
	SnapshotID       string    `json:"snapshot_id"`
	IsIncremental    bool      `json:"is_incremental"`
	SizeBytes        int64     `json:"size_bytes"` // volume bytes covered
	ObjectCount      int       `json:"object_count"`
	StoredBytes      int64     `json:"stored_bytes"` // new bytes this backup added to the repository
	AvailabilityZone string    `json:"availability_zone"`
	Container        string    `json:"container"`     // repository URL
	RepositoryID     string    `json:"repository_id"` // repository config id
	ProjectID        string    `json:"project_id"`
	ManifestDigest   string    `json:"manifest_digest"`
	RefsApplied      int       `json:"refs_applied"` // unique manifest IDs whose refs are counted (crash recovery)
	MissingParent    bool      `json:"missing_parent,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	DataTimestamp    time.Time `json:"data_timestamp"`
}

// Chunk is one chunk-index entry: where the chunk lives and how many
// backups reference it.
type Chunk struct {
	chunkstore.Location
	Refs uint32
}

// Options tune Badger for bounded memory.
type Options struct {
	// InMemory is for unit tests of code above the catalog only.
	InMemory bool
}

// Catalog is an open catalog. One process owns it at a time.
type Catalog struct{}

// Open opens (creating when absent) the catalog in dir, checks the schema
// version, and returns a clear error when another process holds it.
func Open(dir string, opt Options) (*Catalog, error) { panic("stub") }
func (c *Catalog) Close() error                      { panic("stub") }

// View runs fn in a read-only transaction; Update in a read-write one that
// commits atomically when fn returns nil.
func (c *Catalog) View(fn func(*Tx) error) error   { panic("stub") }
func (c *Catalog) Update(fn func(*Tx) error) error { panic("stub") }

// Tx is a transaction with typed accessors.
type Tx struct{}

func (tx *Tx) Volume(id string) (*Volume, error) { panic("stub") }
func (tx *Tx) PutVolume(v *Volume) error         { panic("stub") }
func (tx *Tx) DeleteVolume(id string) error      { panic("stub") }
func (tx *Tx) Volumes() ([]*Volume, error)       { panic("stub") }

func (tx *Tx) Backup(id string) (*Backup, error) { panic("stub") }
func (tx *Tx) PutBackup(b *Backup) error         { panic("stub") }
func (tx *Tx) DeleteBackup(id string) error      { panic("stub") }
func (tx *Tx) Backups() ([]*Backup, error)       { panic("stub") }

// Chunk returns the entry of chunk id in repository repoID.
func (tx *Tx) Chunk(repoID string, id chunkstore.ID) (Chunk, bool, error) { panic("stub") }
func (tx *Tx) PutChunk(repoID string, id chunkstore.ID, c Chunk) error    { panic("stub") }
func (tx *Tx) DeleteChunk(repoID string, id chunkstore.ID) error          { panic("stub") }

// Chunks calls fn for every chunk entry of repository repoID.
func (tx *Tx) Chunks(repoID string, fn func(chunkstore.ID, Chunk) error) error { panic("stub") }
