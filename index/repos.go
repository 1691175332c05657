package index

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/volback/volback/chunkstore"
)

// RepoState is what the catalog knows about one repository beyond its
// chunks: the GC generation its chunk index reflects.
type RepoState struct {
	ID  string `json:"id"`
	URL string `json:"url"`
	// GCGeneration is the repository's generation object as of the
	// last sync ("" = none existed then). A different generation in the
	// repository means another catalog moved or deleted packs since.
	GCGeneration string `json:"gc_generation"`
}

// ZoneBinding records which repository an availability zone uses, so a
// missing or replaced repository is refused instead of re-created empty.
type ZoneBinding struct {
	Zone         string `json:"zone"`
	RepositoryID string `json:"repository_id"`
	URL          string `json:"url"`
}

// RepoState returns the state of repository id; found is false when the
// catalog has never synced with it.
func (tx *Tx) RepoState(id string) (st RepoState, found bool, err error) {
	err = tx.getJSON("repository", id, repoKey(id), &st)
	if errors.Is(err, ErrNotFound) {
		return RepoState{}, false, nil
	}
	return st, err == nil, err
}

// PutRepoState creates or replaces the state of repository st.ID.
func (tx *Tx) PutRepoState(st RepoState) error {
	return tx.putJSON("repository", st.ID, repoKey(st.ID), &st)
}

// Zone returns the binding of zone name; found is false when the zone
// never had a repository in this catalog.
func (tx *Tx) Zone(name string) (z ZoneBinding, found bool, err error) {
	err = tx.getJSON("zone", name, zoneKey(name), &z)
	if errors.Is(err, ErrNotFound) {
		return ZoneBinding{}, false, nil
	}
	return z, err == nil, err
}

// PutZone creates or replaces the binding of zone z.Zone.
func (tx *Tx) PutZone(z ZoneBinding) error { return tx.putJSON("zone", z.Zone, zoneKey(z.Zone), &z) }

// AddBackupPack records that backup id uploads pack: if the backup fails,
// even in a crash, its packs can then be found and removed.
func (tx *Tx) AddBackupPack(id string, pack chunkstore.ID) error {
	if err := checkID("backup", id); err != nil {
		return err
	}
	if err := tx.txn.Set(backupPackKey(id, pack), nil); err != nil {
		return writeErr("put", fmt.Sprintf("pack %s of backup %q", pack, id), err)
	}
	return nil
}

// DeleteBackupPack forgets one recorded pack of backup id (missing: no error).
func (tx *Tx) DeleteBackupPack(id string, pack chunkstore.ID) error {
	if err := checkID("backup", id); err != nil {
		return err
	}
	if err := tx.txn.Delete(backupPackKey(id, pack)); err != nil {
		return writeErr("delete", fmt.Sprintf("pack %s of backup %q", pack, id), err)
	}
	return nil
}

// BackupPacks calls fn for every recorded pack of every backup (id "" )
// or of one backup, in key order.
func (tx *Tx) BackupPacks(id string, fn func(backupID string, pack chunkstore.ID) error) error {
	prefix := []byte(prefixBackupPack)
	if id != "" {
		if err := checkID("backup", id); err != nil {
			return err
		}
		prefix = backupPackPrefix(id)
	}
	it := tx.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		k := it.Item().Key()
		rest := k[len(prefixBackupPack):]
		var pack chunkstore.ID
		if len(rest) < len(pack)+2 || rest[len(rest)-len(pack)-1] != '/' {
			return fmt.Errorf("backup pack key %q: malformed", k)
		}
		copy(pack[:], rest[len(rest)-len(pack):])
		if err := fn(string(rest[:len(rest)-len(pack)-1]), pack); err != nil {
			return err
		}
	}
	return nil
}
