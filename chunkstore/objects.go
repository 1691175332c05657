package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/volback/volback/drivers/repo"
)

// Object names (docs/FORMAT.md). Only this package builds or parses them:
// everything above works with backup ids and pack IDs.
const (
	packsPrefix     = "packs/"
	manifestsPrefix = "manifests/"
	recordsPrefix   = "backups/"
	locksPrefix     = "locks/"
	generationName  = "gc/generation"
)

func packName(id ID) string { return packsPrefix + id.String() }

// ManifestName and RecordName are the object names of a backup's manifest
// and record, for messages and Cinder's service_metadata only; read and
// write the objects through the Store.
func ManifestName(backupID string) string { return manifestsPrefix + backupID }
func RecordName(backupID string) string   { return recordsPrefix + backupID }

// Location is the repository URL, for messages.
func (s *Store) Location() string { return s.be.Location() }

// DriverName is the driver's backup_service name.
func (s *Store) DriverName() string { return s.be.Name() }

// Close releases the driver.
func (s *Store) Close() error { return s.be.Close() }

// PutRecord validates and stores a backup record durably.
func (s *Store) PutRecord(ctx context.Context, r *Record) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("record of backup %s: %w", r.ID, err)
	}
	if err := s.ready(); err != nil {
		return err
	}
	name := RecordName(r.ID)
	if err := s.be.Put(ctx, name, s.sealObject(sealedRecordMagic, name, EncodeRecord(r))); err != nil {
		return fmt.Errorf("writing record of backup %s: %w", r.ID, err)
	}
	return nil
}

// GetRecord reads and validates a backup's record. A missing record wraps
// repo.ErrNotFound; one that is not valid, or names another backup, wraps
// ErrCorrupt.
func (s *Store) GetRecord(ctx context.Context, backupID string) (*Record, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	name := RecordName(backupID)
	data, err := s.be.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("record of backup %s: %w", backupID, err)
	}
	if data, err = s.openObject(sealedRecordMagic, name, data); err != nil {
		return nil, fmt.Errorf("record of backup %s: %w", backupID, err)
	}
	r, err := DecodeRecord(data)
	if err == nil && r.ID != backupID {
		err = corruptf("the record object of backup %s holds backup %s", backupID, r.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("record of backup %s: %w", backupID, err)
	}
	return r, nil
}

// HasRecord reports whether the backup's record object exists.
func (s *Store) HasRecord(ctx context.Context, backupID string) (bool, error) {
	_, err := s.be.Stat(ctx, RecordName(backupID))
	if errors.Is(err, repo.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("record of backup %s: %w", backupID, err)
	}
	return true, nil
}

// ListRecords calls fn with the backup id of every record, in no order.
func (s *Store) ListRecords(ctx context.Context, fn func(backupID string) error) error {
	err := s.be.List(ctx, recordsPrefix, func(i repo.Info) error {
		return fn(strings.TrimPrefix(i.Name, recordsPrefix))
	})
	if err != nil {
		return fmt.Errorf("listing the backup records of %s: %w", s.be.Location(), err)
	}
	return nil
}

// DeleteRecord removes a backup's record; a missing one is not an error.
func (s *Store) DeleteRecord(ctx context.Context, backupID string) error {
	return s.deleteObject(ctx, backupID, RecordName(backupID))
}

func (s *Store) deleteObject(ctx context.Context, backupID, name string) error {
	if err := s.be.Delete(ctx, name); err != nil && !errors.Is(err, repo.ErrNotFound) {
		return fmt.Errorf("deleting %s of backup %s from %s: %w", name, backupID, s.be.Location(), err)
	}
	return nil
}

// DeleteBackupObjects removes a backup's record, then its manifest: the
// record goes first so that the set of records stays the set of complete
// backups at every moment. Objects already gone are not an error.
func (s *Store) DeleteBackupObjects(ctx context.Context, backupID string) error {
	if err := s.DeleteRecord(ctx, backupID); err != nil {
		return err
	}
	return s.DeleteManifest(ctx, backupID)
}

// PackInfo is one stored pack.
type PackInfo struct {
	ID      ID
	Size    int64
	ModTime time.Time
}

// ListPacks calls fn for every pack, in no order. An object under the
// packs prefix whose name is not a pack ID is passed to stray (when not
// nil) and otherwise ignored.
func (s *Store) ListPacks(ctx context.Context, fn func(PackInfo) error, stray func(name string)) error {
	err := s.be.List(ctx, packsPrefix, func(i repo.Info) error {
		hexID := strings.TrimPrefix(i.Name, packsPrefix)
		id, err := ParseID(hexID)
		if err == nil && id.String() != hexID {
			err = fmt.Errorf("pack name %s is not lowercase hex", i.Name) // then packName(id) would not find it
		}
		if err != nil {
			if stray != nil {
				stray(i.Name)
			}
			return nil
		}
		return fn(PackInfo{ID: id, Size: i.Size, ModTime: i.ModTime})
	})
	if err != nil {
		return fmt.Errorf("listing the packs of %s: %w", s.be.Location(), err)
	}
	return nil
}

// StatPack returns a pack's size and time; a missing pack wraps
// repo.ErrNotFound.
func (s *Store) StatPack(ctx context.Context, id ID) (PackInfo, error) {
	i, err := s.be.Stat(ctx, packName(id))
	if err != nil {
		return PackInfo{}, fmt.Errorf("pack %s: %w", id, err)
	}
	return PackInfo{ID: id, Size: i.Size, ModTime: i.ModTime}, nil
}

// DeletePack removes a pack. Only the holder of the exclusive repository
// lock may, and only while the lock is still held: it is checked first.
// A pack already gone is not an error.
func (s *Store) DeletePack(ctx context.Context, lk *Lock, id ID) error {
	if lk == nil || lk.s != s || !lk.exclusive {
		return fmt.Errorf("deleting pack %s of %s: the exclusive repository lock is required (a bug: report it)", id, s.be.Location())
	}
	if err := lk.Check(); err != nil {
		return fmt.Errorf("deleting pack %s: %w", id, err)
	}
	if err := s.be.Delete(ctx, packName(id)); err != nil && !errors.Is(err, repo.ErrNotFound) {
		return fmt.Errorf("deleting pack %s of %s: %w", id, s.be.Location(), err)
	}
	return nil
}

// CleanUp lets a driver that can leave storage behind after interrupted
// writes (repo.Cleaner: rados) settle those older than olderThan. Only the
// holder of the exclusive lock may: then no other writer is mid-Put.
func (s *Store) CleanUp(ctx context.Context, lk *Lock, olderThan time.Duration) (int, error) {
	c, ok := s.be.(repo.Cleaner)
	if !ok {
		return 0, nil
	}
	if lk == nil || lk.s != s || !lk.exclusive {
		return 0, fmt.Errorf("cleaning up %s: the exclusive repository lock is required (a bug: report it)", s.be.Location())
	}
	if err := lk.Check(); err != nil {
		return 0, err
	}
	n, err := c.CleanUp(ctx, olderThan)
	if err != nil {
		return n, fmt.Errorf("settling interrupted writes in %s: %w", s.be.Location(), err)
	}
	return n, nil
}
