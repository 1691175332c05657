package index

import (
	"errors"
	"strconv"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Key prefixes of the lifecycle records (issue 9). They are new prefixes,
// which older code ignores, so the schema version stays 1.
const (
	prefixSnapshot = "snap/"   // snap/<snapshot id> -> Snapshot as JSON
	prefixQuota    = "quota/"  // quota/<project> -> Quota as JSON (absent: defaults)
	prefixQGuard   = "qguard/" // qguard/<project> -> decimal counter, see GuardQuota
	prefixService  = "svc/"    // svc/<binary>/<zone> -> Service as JSON
)

// Snapshot is a point-in-time copy of a volume made by its driver.
type Snapshot struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	VolumeID    string    `json:"volume_id"`
	Status      string    `json:"status"`
	Size        int64     `json:"size_bytes"`
	ProjectID   string    `json:"project_id"`
	DriverName  string    `json:"driver_name"` // the name the volume driver knows it by
	Locator     string    `json:"locator"`     // opens it read-only (volume.OpenSource)
	Method      string    `json:"method"`      // reflink, sparse-copy, rbd
	PrevStatus  string    `json:"prev_status,omitempty"`
	BackupID    string    `json:"backup_id,omitempty"` // set on a backup's own temporary snapshot
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func snapshotKey(id string) []byte { return []byte(prefixSnapshot + id) }

// Snapshot returns snapshot id or an error wrapping ErrNotFound.
func (tx *Tx) Snapshot(id string) (*Snapshot, error) {
	s := new(Snapshot)
	if err := tx.getJSON("snapshot", id, snapshotKey(id), s); err != nil {
		return nil, err
	}
	return s, nil
}

// PutSnapshot creates or replaces snapshot s.ID.
func (tx *Tx) PutSnapshot(s *Snapshot) error {
	return tx.putJSON("snapshot", s.ID, snapshotKey(s.ID), s)
}

// DeleteSnapshot removes snapshot id; it must exist (else ErrNotFound).
func (tx *Tx) DeleteSnapshot(id string) error {
	return tx.deleteRecord("snapshot", id, snapshotKey(id))
}

// Snapshots returns every snapshot, oldest first.
func (tx *Tx) Snapshots() ([]*Snapshot, error) {
	return scanRecords(tx, prefixSnapshot, "snapshot", func(s *Snapshot) (time.Time, string) { return s.CreatedAt, s.ID })
}

// Quota is a project's limits; -1 is unlimited (Cinder's convention).
type Quota struct {
	Backups         int64 `json:"backups"`
	BackupGigabytes int64 `json:"backup_gigabytes"`
}

// Quota returns project's limits; found is false when none were set.
func (tx *Tx) Quota(project string) (q Quota, found bool, err error) {
	err = tx.getJSON("quota", project, []byte(prefixQuota+project), &q)
	if errors.Is(err, ErrNotFound) {
		return Quota{}, false, nil
	}
	return q, err == nil, err
}

// PutQuota sets project's limits.
func (tx *Tx) PutQuota(project string, q Quota) error {
	return tx.putJSON("quota", project, []byte(prefixQuota+project), q)
}

// GuardQuota reads and rewrites project's guard key. Every transaction
// that checks a project's usage against its quota and adds to it calls
// it, so two such transactions conflict and one is run again, seeing the
// other's records: usage is counted from the records themselves, which a
// concurrent transaction would otherwise not see (new keys are no
// conflict).
func (tx *Tx) GuardQuota(project string) error {
	if err := checkID("project", project); err != nil {
		return err
	}
	key := []byte(prefixQGuard + project)
	var n uint64
	item, err := tx.txn.Get(key)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return err
	default:
		if err := item.Value(func(v []byte) error { n, _ = strconv.ParseUint(string(v), 10, 64); return nil }); err != nil {
			return err
		}
	}
	if err := tx.txn.Set(key, []byte(strconv.FormatUint(n+1, 10))); err != nil {
		return writeErr("put", "quota guard of project "+project, err)
	}
	return nil
}

// Service is the state operators set on a service (service-disable) and
// the heartbeat of the last time it was seen working.
type Service struct {
	Binary         string    `json:"binary"`
	Zone           string    `json:"zone"`
	Disabled       bool      `json:"disabled"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	Heartbeat      time.Time `json:"heartbeat"` // last time the service answered
	Error          string    `json:"error,omitempty"`
	UpdatedAt      time.Time `json:"updated_at"`
}

func serviceKey(binary, zone string) []byte { return []byte(prefixService + binary + "/" + zone) }

// ServiceState returns the record of binary in zone; found is false when
// there is none yet.
func (tx *Tx) ServiceState(binary, zone string) (s Service, found bool, err error) {
	if err := checkID("service", binary); err != nil {
		return s, false, err
	}
	err = tx.getJSON("service", zone, serviceKey(binary, zone), &s)
	if errors.Is(err, ErrNotFound) {
		return Service{Binary: binary, Zone: zone}, false, nil
	}
	return s, err == nil, err
}

// PutServiceState stores s.
func (tx *Tx) PutServiceState(s Service) error {
	if err := checkID("service", s.Binary); err != nil {
		return err
	}
	return tx.putJSON("service", s.Zone, serviceKey(s.Binary, s.Zone), s)
}
