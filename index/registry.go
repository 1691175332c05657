package index

import (
	"errors"
	"time"
)

// Repositories the catalog knows by name (repo-init, or a zone's first
// use), and where scrubbing each one stopped. Both are new prefixes that
// older code ignores: the schema stays 1.
const (
	prefixRegistry = "reg/"
	prefixScrub    = "scrub/"
)

// Repository is a registered repository: Cinder's container. It holds no
// key: an encrypted repository's keys live in the repository, wrapped, and
// the unlocked master key only in the owner's memory.
type Repository struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"` // the container name; "" = known by its URL
	URL        string `json:"url"`
	Zone       string `json:"zone"`
	Encryption string `json:"encryption"` // "none" or the cipher
	ChunkSize  int    `json:"chunk_size"`
	// CompressionLevel overrides the config's compression_level for
	// backups into this repository when set.
	CompressionLevel *int      `json:"compression_level,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
}

// ScrubState is where the last scrub of a repository stopped, so the next
// one resumes there.
type ScrubState struct {
	RepositoryID string `json:"repository_id"`
	// Cursor is the hex chunk id the next scrub starts after ("" = from
	// the start of a new pass).
	Cursor    string    `json:"cursor"`
	Passes    int       `json:"passes"`     // complete passes over every chunk
	LastRun   time.Time `json:"last_run"`   // when the last scrub ended
	LastPass  time.Time `json:"last_pass"`  // when the last complete pass ended
	CheckedIn int       `json:"checked_in"` // chunks verified in the current pass
}

func registryKey(id string) []byte { return []byte(prefixRegistry + id) }
func scrubKey(id string) []byte    { return []byte(prefixScrub + id) }

// Repository returns the registration of repository id; found is false
// when it has none.
func (tx *Tx) Repository(id string) (r Repository, found bool, err error) {
	err = tx.getJSON("repository", id, registryKey(id), &r)
	if errors.Is(err, ErrNotFound) {
		return Repository{}, false, nil
	}
	return r, err == nil, err
}

// PutRepository creates or replaces the registration of r.ID.
func (tx *Tx) PutRepository(r Repository) error {
	return tx.putJSON("repository", r.ID, registryKey(r.ID), &r)
}

// Repositories lists every registered repository, oldest first.
func (tx *Tx) Repositories() ([]*Repository, error) {
	return scanRecords(tx, prefixRegistry, "repository", func(r *Repository) (time.Time, string) { return r.CreatedAt, r.ID })
}

// Zones lists every zone binding.
func (tx *Tx) Zones() ([]*ZoneBinding, error) {
	return scanRecords(tx, prefixZone, "zone", func(z *ZoneBinding) (time.Time, string) { return time.Time{}, z.Zone })
}

// Scrub returns where scrubbing repository id stopped (zero if never).
func (tx *Tx) Scrub(id string) (ScrubState, error) {
	var st ScrubState
	err := tx.getJSON("scrub", id, scrubKey(id), &st)
	if errors.Is(err, ErrNotFound) {
		return ScrubState{RepositoryID: id}, nil
	}
	return st, err
}

// PutScrub records where scrubbing st.RepositoryID stopped.
func (tx *Tx) PutScrub(st ScrubState) error {
	return tx.putJSON("scrub", st.RepositoryID, scrubKey(st.RepositoryID), &st)
}
