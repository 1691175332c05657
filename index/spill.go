package index

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/volback/volback/chunkstore"
)

// The catalog doubles as volback's spill space: work whose state grows
// with the repository (every chunk located in pack trailers, every
// reference counted from manifests) keeps that state here, on disk,
// instead of in maps in memory. Each use has its own scope (no '/') and
// removes it when done; recovery drops scopes a crash left (DropScopes).
//
//	stg/<scope>/<32 raw chunk id> -> location, 46 bytes (pack, offset, length, raw length, codec)
//	cnt/<scope>/<32 raw chunk id> -> count u32
//
// Staged locations are not chunk entries: no backup deduplicates against
// them, and repo-gc does not see them.
const (
	prefixStaged = "stg/"
	prefixCount  = "cnt/"
	locValueLen  = 32 + 4 + 4 + 4 + 1
)

func spillKey(prefix, scope string, id chunkstore.ID) []byte {
	k := make([]byte, 0, len(prefix)+len(scope)+1+len(id))
	k = append(k, prefix...)
	k = append(k, scope...)
	k = append(k, '/')
	return append(k, id[:]...)
}

func encodeLoc(l chunkstore.Location) []byte {
	b := make([]byte, locValueLen)
	copy(b, l.Pack[:])
	binary.LittleEndian.PutUint32(b[32:], l.Offset)
	binary.LittleEndian.PutUint32(b[36:], l.Length)
	binary.LittleEndian.PutUint32(b[40:], l.RawLength)
	b[44] = byte(l.Codec)
	return b
}

func decodeLoc(b []byte) (chunkstore.Location, error) {
	var l chunkstore.Location
	if len(b) != locValueLen {
		return l, fmt.Errorf("staged location is %d bytes, want %d", len(b), locValueLen)
	}
	copy(l.Pack[:], b)
	l.Offset = binary.LittleEndian.Uint32(b[32:])
	l.Length = binary.LittleEndian.Uint32(b[36:])
	l.RawLength = binary.LittleEndian.Uint32(b[40:])
	l.Codec = chunkstore.Codec(b[44])
	return l, nil
}

// PutStaged keeps where chunk id was found, in scope; an earlier location
// is kept (the first copy found wins).
func (tx *Tx) PutStaged(scope string, id chunkstore.ID, l chunkstore.Location) error {
	if err := checkID("spill scope", scope); err != nil {
		return err
	}
	k := spillKey(prefixStaged, scope, id)
	if _, err := tx.txn.Get(k); err == nil {
		return nil
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("read staged chunk %x: %w", id[:], err)
	}
	if err := tx.txn.Set(k, encodeLoc(l)); err != nil {
		return writeErr("put", fmt.Sprintf("staged chunk %x", id[:]), err)
	}
	return nil
}

// Staged returns where chunk id was found, in scope.
func (tx *Tx) Staged(scope string, id chunkstore.ID) (chunkstore.Location, bool, error) {
	if err := checkID("spill scope", scope); err != nil {
		return chunkstore.Location{}, false, err
	}
	item, err := tx.txn.Get(spillKey(prefixStaged, scope, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return chunkstore.Location{}, false, nil
	}
	if err != nil {
		return chunkstore.Location{}, false, fmt.Errorf("read staged chunk %x: %w", id[:], err)
	}
	var l chunkstore.Location
	err = item.Value(func(b []byte) error { l, err = decodeLoc(b); return err })
	return l, err == nil, err
}

// AddCount adds n to chunk id's count in scope.
func (tx *Tx) AddCount(scope string, id chunkstore.ID, n uint32) error {
	if err := checkID("spill scope", scope); err != nil {
		return err
	}
	k := spillKey(prefixCount, scope, id)
	var cur uint32
	item, err := tx.txn.Get(k)
	switch {
	case err == nil:
		err = item.Value(func(b []byte) error {
			if len(b) != 4 {
				return fmt.Errorf("count of chunk %x is %d bytes, want 4", id[:], len(b))
			}
			cur = binary.LittleEndian.Uint32(b)
			return nil
		})
		if err != nil {
			return err
		}
	case !errors.Is(err, badger.ErrKeyNotFound):
		return fmt.Errorf("read count of chunk %x: %w", id[:], err)
	}
	if err := tx.txn.Set(k, binary.LittleEndian.AppendUint32(nil, cur+n)); err != nil {
		return writeErr("put", fmt.Sprintf("count of chunk %x", id[:]), err)
	}
	return nil
}

// CountJoin walks, in chunk id order, every chunk that has an entry in
// repository repoID or a count in scope, with its entry (found false
// when none) and its count (0 when none): a merge of two sorted key
// ranges, so memory does not grow with either.
func (tx *Tx) CountJoin(repoID, scope string, fn func(id chunkstore.ID, c Chunk, found bool, count uint32) error) error {
	if err := checkID("repository", repoID); err != nil {
		return err
	}
	if err := checkID("spill scope", scope); err != nil {
		return err
	}
	cp, np := chunkPrefix(repoID), []byte(prefixCount+scope+"/")
	ci := tx.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256, Prefix: cp})
	defer ci.Close()
	ni := tx.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 256, Prefix: np})
	defer ni.Close()
	ci.Seek(cp)
	ni.Seek(np)
	for ci.ValidForPrefix(cp) || ni.ValidForPrefix(np) {
		var cid, nid []byte
		if ci.ValidForPrefix(cp) {
			cid = ci.Item().Key()[len(cp):]
		}
		if ni.ValidForPrefix(np) {
			nid = ni.Item().Key()[len(np):]
		}
		takeC := cid != nil && (nid == nil || string(cid) <= string(nid))
		takeN := nid != nil && (cid == nil || string(nid) <= string(cid))
		var id chunkstore.ID
		var c Chunk
		var count uint32
		if takeC {
			if len(cid) != len(id) {
				return fmt.Errorf("chunk key of repository %q: id is %d bytes", repoID, len(cid))
			}
			copy(id[:], cid)
			err := ci.Item().Value(func(v []byte) (err error) { c, err = decodeChunk(v); return err })
			if err != nil {
				return fmt.Errorf("chunk %x of repository %q: %w", id[:], repoID, err)
			}
			ci.Next()
		}
		if takeN {
			if len(nid) != len(id) {
				return fmt.Errorf("count key of scope %q: id is %d bytes", scope, len(nid))
			}
			copy(id[:], nid)
			err := ni.Item().Value(func(v []byte) error {
				if len(v) != 4 {
					return fmt.Errorf("count of chunk %x is %d bytes", id[:], len(v))
				}
				count = binary.LittleEndian.Uint32(v)
				return nil
			})
			if err != nil {
				return err
			}
			ni.Next()
		}
		if err := fn(id, c, takeC, count); err != nil {
			return err
		}
	}
	return nil
}

// DropScope removes everything kept in scope, in batches.
func (c *Catalog) DropScope(scope string) error {
	if err := checkID("spill scope", scope); err != nil {
		return err
	}
	for _, p := range []string{prefixStaged, prefixCount} {
		if err := c.dropPrefix([]byte(p + scope + "/")); err != nil {
			return err
		}
	}
	return nil
}

// DropScopes removes every spill scope whose name starts with prefix (all
// of them for ""): recovery's cleanup after a crash.
func (c *Catalog) DropScopes(prefix string) error {
	for _, p := range []string{prefixStaged, prefixCount} {
		if err := c.dropPrefix([]byte(p + prefix)); err != nil {
			return err
		}
	}
	return nil
}

// dropPrefix deletes every key under prefix, MaxBatch per transaction.
func (c *Catalog) dropPrefix(prefix []byte) error {
	for {
		var keys [][]byte
		err := c.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Seek(prefix); it.ValidForPrefix(prefix) && len(keys) < MaxBatch; it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		err = c.db.Update(func(txn *badger.Txn) error {
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return writeErr("delete", "spill key", err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}

// ChunksAfter calls fn for up to limit chunk entries of repository repoID
// with ids after `after` (all when nil), in id order, and returns the last
// id seen, with done set when the entries ran out. Work that does I/O per
// entry (repo-check --read-data) pages through the index with it, so no
// transaction stays open for long.
func (tx *Tx) ChunksAfter(repoID string, after *chunkstore.ID, limit int, fn func(chunkstore.ID, Chunk) error) (last chunkstore.ID, done bool, err error) {
	if err := checkID("repository", repoID); err != nil {
		return last, false, err
	}
	prefix := chunkPrefix(repoID)
	it := tx.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: min(limit, 256), Prefix: prefix})
	defer it.Close()
	start := prefix
	if after != nil {
		start = append(chunkKey(repoID, *after), 0) // the next key after it
	}
	n := 0
	for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
		if n == limit {
			return last, false, nil
		}
		k := it.Item().Key()[len(prefix):]
		if len(k) != len(last) {
			return last, false, fmt.Errorf("chunk key of repository %q: id is %d bytes", repoID, len(k))
		}
		var id chunkstore.ID
		copy(id[:], k)
		var c Chunk
		if err := it.Item().Value(func(v []byte) (err error) { c, err = decodeChunk(v); return err }); err != nil {
			return last, false, fmt.Errorf("chunk %x of repository %q: %w", id[:], repoID, err)
		}
		if err := fn(id, c); err != nil {
			return last, false, err
		}
		last = id
		n++
	}
	return last, true, nil
}
