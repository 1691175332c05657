package index

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/volback/volback/chunkstore"
)

// Tx is a transaction with typed accessors. It is valid only inside the
// View or Update callback that received it and is not safe for concurrent
// use.
type Tx struct {
	txn    *badger.Txn
	tables []levelTables // the catalog's, for ChunksOf to drop pages it mapped; nil in memory
}

// writeErr names the failed write and maps Badger's size limit to
// ErrTxnTooBig.
func writeErr(op, what string, err error) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("%s %s: %w: split the work into transactions of at most %d chunk updates",
			op, what, ErrTxnTooBig, MaxBatch)
	}
	if errors.Is(err, badger.ErrReadOnlyTxn) {
		return fmt.Errorf("%s %s: read-only transaction: use Catalog.Update", op, what)
	}
	return fmt.Errorf("%s %s: %w", op, what, err)
}

// getJSON loads the record at key into v.
func (tx *Tx) getJSON(kind, id string, key []byte, v any) error {
	if err := checkID(kind, id); err != nil {
		return err
	}
	item, err := tx.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("%s %q: %w", kind, id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read %s %q: %w", kind, id, err)
	}
	err = item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	if err != nil {
		return fmt.Errorf("decode %s %q: %w", kind, id, err)
	}
	return nil
}

func (tx *Tx) putJSON(kind, id string, key []byte, v any) error {
	if err := checkID(kind, id); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %q: %w", kind, id, err)
	}
	if err := tx.txn.Set(key, b); err != nil {
		return writeErr("put", fmt.Sprintf("%s %q", kind, id), err)
	}
	return nil
}

// deleteRecord removes a record that must exist.
func (tx *Tx) deleteRecord(kind, id string, key []byte) error {
	if err := checkID(kind, id); err != nil {
		return err
	}
	if _, err := tx.txn.Get(key); errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("%s %q: %w", kind, id, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("read %s %q: %w", kind, id, err)
	}
	if err := tx.txn.Delete(key); err != nil {
		return writeErr("delete", fmt.Sprintf("%s %q", kind, id), err)
	}
	return nil
}

// scan calls fn with the key and value of every entry under prefix. The
// value is valid only during the call.
func (tx *Tx) scan(prefix []byte, prefetch int, fn func(k, v []byte) error) error {
	it := tx.txn.NewIterator(badger.IteratorOptions{
		PrefetchValues: true, // every value is read
		PrefetchSize:   prefetch,
		Prefix:         prefix,
	})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		k := item.Key()
		if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
			return err
		}
	}
	return nil
}

// Volume returns volume id or an error wrapping ErrNotFound.
func (tx *Tx) Volume(id string) (*Volume, error) {
	v := new(Volume)
	if err := tx.getJSON("volume", id, volumeKey(id), v); err != nil {
		return nil, err
	}
	return v, nil
}

// PutVolume creates or replaces the volume record v.ID.
func (tx *Tx) PutVolume(v *Volume) error { return tx.putJSON("volume", v.ID, volumeKey(v.ID), v) }

// DeleteVolume removes volume id; it must exist (else ErrNotFound).
func (tx *Tx) DeleteVolume(id string) error { return tx.deleteRecord("volume", id, volumeKey(id)) }

// Volumes returns every volume, oldest first (CreatedAt, then ID).
func (tx *Tx) Volumes() ([]*Volume, error) {
	return scanRecords(tx, prefixVolume, "volume", func(v *Volume) (time.Time, string) { return v.CreatedAt, v.ID })
}

// Backup returns backup id or an error wrapping ErrNotFound.
func (tx *Tx) Backup(id string) (*Backup, error) {
	b := new(Backup)
	if err := tx.getJSON("backup", id, backupKey(id), b); err != nil {
		return nil, err
	}
	return b, nil
}

// PutBackup creates or replaces the backup record b.ID.
func (tx *Tx) PutBackup(b *Backup) error { return tx.putJSON("backup", b.ID, backupKey(b.ID), b) }

// DeleteBackup removes backup id; it must exist (else ErrNotFound).
func (tx *Tx) DeleteBackup(id string) error { return tx.deleteRecord("backup", id, backupKey(id)) }

// Backups returns every backup, oldest first (CreatedAt, then ID).
func (tx *Tx) Backups() ([]*Backup, error) {
	return scanRecords(tx, prefixBackup, "backup", func(b *Backup) (time.Time, string) { return b.CreatedAt, b.ID })
}

// scanRecords decodes every JSON record under prefix, sorted by creation
// time, then id.
func scanRecords[T any](tx *Tx, prefix, kind string, key func(*T) (time.Time, string)) ([]*T, error) {
	var out []*T
	err := tx.scan([]byte(prefix), 16, func(k, b []byte) error {
		r := new(T)
		if err := json.Unmarshal(b, r); err != nil {
			return fmt.Errorf("decode %s record %q: %w", kind, k, err)
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		ti, idi := key(out[i])
		tj, idj := key(out[j])
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return idi < idj
	})
	return out, nil
}

// Chunk returns the entry of chunk id in repository repoID. A missing
// entry is (Chunk{}, false, nil): absence is the normal answer of the
// dedup check, not an error.
func (tx *Tx) Chunk(repoID string, id chunkstore.ID) (Chunk, bool, error) {
	if err := checkID("repository", repoID); err != nil {
		return Chunk{}, false, err
	}
	item, err := tx.txn.Get(chunkKey(repoID, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Chunk{}, false, nil
	}
	if err != nil {
		return Chunk{}, false, fmt.Errorf("read chunk %x of repository %q: %w", id[:], repoID, err)
	}
	var c Chunk
	err = item.Value(func(b []byte) error {
		c, err = decodeChunk(b)
		return err
	})
	if err != nil {
		return Chunk{}, false, fmt.Errorf("chunk %x of repository %q: %w", id[:], repoID, err)
	}
	return c, true, nil
}

// PutChunk creates or replaces the entry of chunk id in repository repoID.
// Putting a lost entry advances the repository's LossEpoch.
func (tx *Tx) PutChunk(repoID string, id chunkstore.ID, c Chunk) error {
	if err := checkID("repository", repoID); err != nil {
		return err
	}
	if err := tx.txn.Set(chunkKey(repoID, id), encodeChunk(c)); err != nil {
		return writeErr("put", fmt.Sprintf("chunk %x of repository %q", id[:], repoID), err)
	}
	if c.Lost() {
		n, err := tx.LossEpoch(repoID)
		if err != nil {
			return err
		}
		if err := tx.txn.Set(lossEpochKey(repoID), binary.BigEndian.AppendUint64(nil, n+1)); err != nil {
			return writeErr("put", fmt.Sprintf("loss epoch of repository %q", repoID), err)
		}
	}
	return nil
}

// LossEpoch counts the lost entries ever put in repository repoID. A
// backup reads it as it starts and again in the transaction that makes it
// available: a chunk it looked up or counted may have been found lost in
// between, when the backups that need the chunk were marked damaged
// without it (it had no manifest yet), so a changed epoch sends it to
// check its chunks. Read in an update, it also makes that transaction
// conflict with one that advances it.
func (tx *Tx) LossEpoch(repoID string) (uint64, error) {
	item, err := tx.txn.Get(lossEpochKey(repoID))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the loss epoch of repository %q: %w", repoID, err)
	}
	var n uint64
	err = item.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("loss epoch of repository %q is %d bytes, want 8", repoID, len(b))
		}
		n = binary.BigEndian.Uint64(b)
		return nil
	})
	return n, err
}

// DeleteChunk removes the entry of chunk id; deleting a missing entry is
// not an error (it saves a read per chunk when dropping references).
func (tx *Tx) DeleteChunk(repoID string, id chunkstore.ID) error {
	if err := checkID("repository", repoID); err != nil {
		return err
	}
	if err := tx.txn.Delete(chunkKey(repoID, id)); err != nil {
		return writeErr("delete", fmt.Sprintf("chunk %x of repository %q", id[:], repoID), err)
	}
	return nil
}

// Chunks calls fn for every chunk entry of repository repoID, in id order,
// and stops at fn's first error, returning it. In an Update, fn may put or
// delete chunks; the iteration sees the entries as they were when it began.
func (tx *Tx) Chunks(repoID string, fn func(chunkstore.ID, Chunk) error) error {
	if err := checkID("repository", repoID); err != nil {
		return err
	}
	prefix := chunkPrefix(repoID)
	return tx.scan(prefix, 256, func(k, v []byte) error {
		rest := k[len(prefix):]
		var id chunkstore.ID
		if len(rest) != len(id) {
			return fmt.Errorf("chunk key %q of repository %q: id is %d bytes, want %d", k, repoID, len(rest), len(id))
		}
		copy(id[:], rest)
		c, err := decodeChunk(v)
		if err != nil {
			return fmt.Errorf("chunk %x of repository %q: %w", id[:], repoID, err)
		}
		return fn(id, c)
	})
}

// ChunksOf calls fn(k, entry, found) for every ids[k], in the order of
// the ids' keys rather than of ids: one iterator seeking forward through
// the tables costs less than a Get per id (a segment of a volume is
// 16,384 lookups when an image is opened or restored). Duplicate ids are
// each reported.
func (tx *Tx) ChunksOf(repoID string, ids []chunkstore.ID, fn func(k int, c Chunk, ok bool) error) error {
	if err := checkID("repository", repoID); err != nil {
		return err
	}
	order := make([]int32, len(ids))
	for k := range order {
		order[k] = int32(k)
	}
	sort.Slice(order, func(a, b int) bool { return bytes.Compare(ids[order[a]][:], ids[order[b]][:]) < 0 })
	prefix := chunkPrefix(repoID)
	it := tx.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	key := make([]byte, 0, len(prefix)+len(chunkstore.ID{}))
	drop := largeTables(tx.tables)
	for n, k := range order {
		if drop && n%lookupsPerDrop == lookupsPerDrop-1 {
			dropDataPages(tx.tables)
		}
		id := ids[k]
		key = append(append(key[:0], prefix...), id[:]...)
		if !it.Valid() || bytes.Compare(it.Item().Key(), key) < 0 {
			it.Seek(key) // stepping with Next first was no faster (BenchmarkSegmentLookup)
		}
		if !it.ValidForPrefix(prefix) || !bytes.Equal(it.Item().Key(), key) {
			if err := fn(int(k), Chunk{}, false); err != nil {
				return err
			}
			continue
		}
		var c Chunk
		err := it.Item().Value(func(b []byte) (err error) { c, err = decodeChunk(b); return err })
		if err != nil {
			return fmt.Errorf("chunk %x of repository %q: %w", id[:], repoID, err)
		}
		if err := fn(int(k), c, true); err != nil {
			return err
		}
	}
	return nil
}
