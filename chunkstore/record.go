package chunkstore

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Record is a backup record (docs/FORMAT.md). Its format_version says
// which manifest it names: 1 a whole one, 3 a segmented one (see
// RecordVersion).
type Record struct {
	FormatVersion    int       `json:"format_version"`
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	Description      string    `json:"description"`
	VolumeID         string    `json:"volume_id"`
	VolumeName       string    `json:"volume_name"`
	VolumeSizeBytes  int64     `json:"volume_size_bytes"`
	ParentID         string    `json:"parent_id"`
	SnapshotID       string    `json:"snapshot_id"`
	IsIncremental    bool      `json:"is_incremental"`
	SizeBytes        int64     `json:"size_bytes"`
	ObjectCount      int       `json:"object_count"`
	StoredBytes      int64     `json:"stored_bytes"`
	AvailabilityZone string    `json:"availability_zone"`
	Container        string    `json:"container"`
	ProjectID        string    `json:"project_id"`
	CreatedAt        time.Time `json:"created_at"`
	DataTimestamp    time.Time `json:"data_timestamp"`
	RepositoryID     string    `json:"repository_id"`
	ChunkSize        int       `json:"chunk_size"`
	ManifestDigest   string    `json:"manifest_digest"`
	// Consistency says how the volume was read, ConsistencyDetail how in
	// words (see docs/FORMAT.md); empty in records written before them.
	Consistency       string `json:"consistency,omitempty"`
	ConsistencyDetail string `json:"consistency_detail,omitempty"`
}

// EncodeRecord serialises a record. It panics only on times JSON cannot
// represent (years outside 0..9999), which Validate refuses.
func EncodeRecord(r *Record) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("chunkstore: EncodeRecord %s: %v", r.ID, err))
	}
	return append(b, '\n')
}

// DecodeRecord parses a record object and validates every field.
func DecodeRecord(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, corruptf("backup record is not valid JSON: %v", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Validate checks a record as DecodeRecord does; writers call it before
// storing one. Errors wrap ErrVersion for a newer format_version and
// ErrCorrupt otherwise.
func (r *Record) Validate() error {
	if r.FormatVersion > RecordVersion {
		return fmt.Errorf("%w: backup record %s has format_version %d and this volback reads version %d; upgrade volback",
			ErrVersion, r.ID, r.FormatVersion, RecordVersion)
	}
	if r.FormatVersion < 1 || r.FormatVersion == 2 {
		return corruptf("backup record %s: format_version is %d, want 1 or %d", r.ID, r.FormatVersion, RecordVersion)
	}
	if _, err := uuid.Parse(r.ID); err != nil || len(r.ID) != 36 {
		return corruptf("backup record id %q is not a UUID", r.ID)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"volume_size_bytes", r.VolumeSizeBytes}, {"size_bytes", r.SizeBytes},
		{"object_count", int64(r.ObjectCount)}, {"stored_bytes", r.StoredBytes}} {
		if f.v < 0 {
			return corruptf("backup record %s: %s is negative (%d)", r.ID, f.name, f.v)
		}
	}
	if err := CheckChunkSize(r.ChunkSize); err != nil {
		return corruptf("backup record %s: %v", r.ID, err)
	}
	if len(r.ManifestDigest) != 64 || !isLowerHex(r.ManifestDigest) {
		return corruptf("backup record %s: manifest_digest %q is not 64 lowercase hex digits", r.ID, r.ManifestDigest)
	}
	for _, t := range []struct {
		name string
		v    time.Time
	}{{"created_at", r.CreatedAt}, {"data_timestamp", r.DataTimestamp}} {
		if y := t.v.Year(); y < 0 || y > 9999 {
			return corruptf("backup record %s: %s year %d out of range", r.ID, t.name, y)
		}
	}
	return nil
}

// Digest parses ManifestDigest.
func (r *Record) Digest() (ID, error) {
	var id ID
	if len(r.ManifestDigest) != 64 {
		return id, corruptf("backup record %s: manifest_digest %q is not 64 hex digits", r.ID, r.ManifestDigest)
	}
	if _, err := hex.Decode(id[:], []byte(r.ManifestDigest)); err != nil {
		return id, corruptf("backup record %s: manifest_digest: %v", r.ID, err)
	}
	return id, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
