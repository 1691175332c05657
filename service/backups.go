package service

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/index"
	"github.com/volback/volback/service/failpoint"
)

var repoNotFound = repo.ErrNotFound

// ListBackups returns the caller's project's backups (every project's
// for an admin asking for all), newest first, optionally of one volume.
func (s *Service) ListBackups(ctx context.Context, volumeRef string, allProjects bool) ([]BackupView, error) {
	out := []BackupView{}
	who := caller(ctx)
	err := s.cat.View(func(tx *index.Tx) error {
		volID := ""
		if volumeRef != "" {
			v, err := findVolume(tx, caller(ctx), volumeRef)
			if err != nil {
				// the volume may be gone while its backups remain: accept a raw id
				volID = volumeRef
			} else {
				volID = v.ID
			}
		}
		all, err := tx.Backups()
		if err != nil {
			return err
		}
		ps := parents(all)
		for _, b := range all {
			if (volID == "" || b.VolumeID == volID) && who.lists(b.ProjectID, allProjects || volumeRef != "") {
				out = append(out, backupView(b, ps))
			}
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, err
}

// ShowBackup returns one backup by id or name.
func (s *Service) ShowBackup(ctx context.Context, ref string) (*BackupView, error) {
	var bv BackupView
	err := s.cat.View(func(tx *index.Tx) error {
		b, err := findBackup(tx, caller(ctx), ref)
		if err != nil {
			return err
		}
		all, err := tx.Backups()
		bv = backupView(b, parents(all))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &bv, nil
}

// loadManifest reads a backup's manifest and checks it is the one the
// catalog recorded.
func (s *Service) loadManifest(ctx context.Context, r *repository, b *index.Backup) (*chunkstore.Manifest, error) {
	m, digest, err := r.store.LoadManifest(ctx, b.ID)
	if err != nil {
		return nil, err
	}
	if b.ManifestDigest != "" && digest.String() != b.ManifestDigest {
		return nil, fmt.Errorf("manifest of backup %s: digest %s, catalog expects %s: %w", b.ID, digest, b.ManifestDigest, chunkstore.ErrCorrupt)
	}
	return m, nil
}

// DeleteRequest is backup-delete.
type DeleteRequest struct {
	Refs []string `json:"refs"`
	// Force (admins only) also cancels a backup being created (the job
	// stops and rolls back, then the backup is deleted), and deletes a
	// backup whose manifest is gone or damaged, one stuck in another
	// status, or a record in a repository that the catalog does not know
	// (by its full id).
	Force bool `json:"force,omitempty"`
}

// DeleteBackups deletes each named backup in turn, following Cinder's
// rules: only available, error or error_deleting backups, and never one
// that incremental backups depend on. When a backup and its incrementals
// are both named, the incrementals go first, whatever the order given, so
// a chain can be deleted in one call. Like Cinder's client, a refusal of
// one does not stop the others; the refusals are returned together.
func (s *Service) DeleteBackups(ctx context.Context, req DeleteRequest) ([]BackupView, error) {
	refs := req.Refs
	if req.Force {
		if err := requireAdmin(caller(ctx), "backup:force_delete"); err != nil {
			return nil, err
		}
	}
	out := []BackupView{}
	var errs []error
	touched := map[*repository]bool{}
	for _, ref := range s.childrenFirst(ctx, refs) {
		bv, r, err := s.deleteBackup(ctx, ref, req.Force)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, *bv)
		if r != nil {
			touched[r] = true
		}
	}
	s.sweepAfterDelete(ctx, touched)
	if len(errs) > 0 {
		return out, fmt.Errorf("deleted %d of %d backups; %w", len(out), len(req.Refs), errors.Join(errs...))
	}
	return out, nil
}

// childrenFirst reorders refs so that no backup comes before one of its
// descendants that is also named; otherwise the given order is kept. Refs
// that name no backup stay where they are, for deleteBackup to refuse.
func (s *Service) childrenFirst(ctx context.Context, refs []string) []string {
	ids := make([]string, len(refs)) // "" where ref does not resolve
	parent := map[string]string{}
	who := caller(ctx)
	err := s.cat.View(func(tx *index.Tx) error {
		all, err := tx.Backups()
		if err != nil {
			return err
		}
		var items []bakRef
		for _, b := range all {
			parent[b.ID] = b.ParentID
			if who.sees(b.ProjectID) {
				items = append(items, bakRef{b})
			}
		}
		for i, ref := range refs {
			if b, err := resolve(items, ref, "backup", "backup-list"); err == nil {
				ids[i] = b.ID
			}
		}
		return nil
	})
	if err != nil {
		return refs
	}
	// ancestorOf reports whether a is a strict ancestor of d.
	ancestorOf := func(a, d string) bool {
		for p, n := parent[d], 0; p != "" && n < len(parent); p, n = parent[p], n+1 {
			if p == a {
				return true
			}
		}
		return false
	}
	out := make([]string, 0, len(refs))
	done := make([]bool, len(refs))
	for len(out) < len(refs) {
		next := -1
		for i := range refs {
			if done[i] {
				continue
			}
			if next < 0 {
				next = i // if every one waits (a damaged chain), keep the given order
			}
			waits := false
			for j := range refs {
				waits = waits || (!done[j] && ids[i] != "" && ids[j] != "" && ancestorOf(ids[i], ids[j]))
			}
			if !waits {
				next = i
				break
			}
		}
		out, done[next] = append(out, refs[next]), true
	}
	return out
}

// sweepAfterDelete removes, once per repository, the packs that deletes
// left without any needed chunk (when the exclusive lock is free now).
func (s *Service) sweepAfterDelete(ctx context.Context, repos map[*repository]bool) {
	for r := range repos {
		s.sweep(context.WithoutCancel(ctx), r)
	}
}

func (s *Service) deleteBackup(ctx context.Context, ref string, force bool) (*BackupView, *repository, error) {
	if force {
		if err := s.cancelCreating(ctx, ref); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, nil, err // (a ref that names no backup is handled below)
		}
	}
	// An encrypted repository is unlocked before anything changes: a
	// missing or wrong passphrase leaves the backup as it is.
	var pre *index.Backup
	if s.cat.View(func(tx *index.Tx) (err error) { pre, err = findBackup(tx, caller(ctx), ref); return err }) == nil && pre.RepositoryID != "" {
		if _, err := s.repoByID(ctx, pre.RepositoryID, pre.AvailabilityZone); locked(err) {
			return nil, nil, fmt.Errorf("deleting backup %s: %w", pre.ID, err)
		}
	}
	var b *index.Backup
	var view BackupView
	err := s.update(func(tx *index.Tx) error {
		var err error
		if b, err = findBackup(tx, caller(ctx), ref); err != nil {
			return err
		}
		switch b.Status {
		case index.StatusAvailable, index.StatusError, index.StatusErrorDeleting:
		default:
			if !force {
				return errorf(ErrInvalidState, "backup %s is %s; only available, error or error_deleting backups can be deleted (--force deletes one stuck in another status)", b.ID, b.Status)
			}
			if s.busy(b.ID) {
				return errorf(ErrInvalidState, "backup %s is %s and a job of this process is working on it; cancel that job first", b.ID, b.Status)
			}
		}
		all, err := tx.Backups()
		if err != nil {
			return err
		}
		for _, o := range all {
			if o.ParentID == b.ID && o.Status != index.StatusError {
				return errorf(ErrInvalidState, "backup %s: Incremental backups exist for this backup (%s); delete them first", b.ID, o.ID)
			}
			// A child in error still counting against b (a rollback that
			// did not finish, a reset state) needs b's counts for the
			// chunks they share: its references go first.
			if o.RefsBase == b.ID && o.RefsApplied > 0 {
				return errorf(ErrInvalidState, "backup %s: backup %s (%s) still counts its chunk references against this backup; delete it first (volback backup-delete %s)", b.ID, o.ID, o.Status, o.ID)
			}
		}
		view = backupView(b, parents(all))
		b.Status, b.UpdatedAt = index.StatusDeleting, now()
		return tx.PutBackup(b)
	})
	if err != nil && b == nil && s.unknownID(ref) {
		return s.deleteUnknown(ctx, ref, force, err)
	}
	if err != nil {
		return nil, nil, err
	}
	r, derr := s.finishDelete(ctx, b, force)
	if derr != nil {
		s.setErrorDeleting(b.ID, derr)
		hint := "run backup-delete again once the cause is fixed"
		if !force {
			hint += " (--force also deletes a backup whose manifest is gone or damaged)"
		}
		return nil, nil, fmt.Errorf("deleting backup %s failed, it is now error_deleting: %w; %s", b.ID, derr, hint)
	}
	view.Status = "deleted"
	s.event(ctx, "backup deleted", "backup", b.ID, "volume", b.VolumeID, "project", b.ProjectID)
	return &view, r, nil
}

// setErrorDeleting records that the delete of backup id failed with cause
// (Cinder's error_deleting: a later delete retries it).
func (s *Service) setErrorDeleting(id string, cause error) {
	err := s.update(func(tx *index.Tx) error {
		cur, err := tx.Backup(id)
		if err != nil {
			return err
		}
		cur.Status, cur.FailReason, cur.UpdatedAt = index.StatusErrorDeleting, "delete failed: "+cause.Error(), now()
		return tx.PutBackup(cur)
	})
	if err != nil {
		s.log.Printf("backup %s: recording the failed delete: %v", id, err)
	}
}

// finishDelete carries a `deleting` backup to its end: the record goes
// first (so neither a catalog rebuild nor another home's GC takes it for a
// live backup), then the references, the manifest and the catalog entry.
// The caller then sweeps the returned repository for packs nobody uses
// (once, however many it deleted). It is also how recovery resumes an
// interrupted delete. With force, a manifest that cannot be read is no
// obstacle: the repository's reference counts are then recounted.
func (s *Service) finishDelete(ctx context.Context, b *index.Backup, force bool) (*repository, error) {
	if b.RepositoryID == "" && b.RefsApplied == 0 { // never reached a repository (unreachable)
		return nil, s.update(func(tx *index.Tx) error { return tx.DeleteBackup(b.ID) })
	}
	r, err := s.repoByID(ctx, b.RepositoryID, b.AvailabilityZone)
	if err != nil {
		return nil, fmt.Errorf("deleting backup %s: %w", b.ID, err)
	}
	recount := false
	var m *chunkstore.Manifest
	if b.RefsApplied > 0 {
		if m, err = s.loadManifest(ctx, r, b); err != nil {
			if !force {
				return nil, fmt.Errorf("deleting backup %s: %w", b.ID, err)
			}
			recount = true
		}
	}
	if err := r.store.DeleteRecord(ctx, b.ID); err != nil {
		return nil, fmt.Errorf("deleting backup %s: %w", b.ID, err)
	}
	failpoint.Hit("delete.record-deleted")
	if m != nil {
		if err := s.releaseRefs(ctx, r, b, m, false); err != nil {
			if !force {
				return nil, err
			}
			recount = true // a segment that cannot be read: recount instead
		}
	}
	if err := r.store.DeleteManifest(ctx, b.ID); err != nil {
		return nil, fmt.Errorf("deleting backup %s: %w", b.ID, err)
	}
	if err := s.update(func(tx *index.Tx) error { return tx.DeleteBackup(b.ID) }); err != nil {
		return nil, err
	}
	failpoint.Hit("delete.catalog-deleted")
	if recount {
		if err := s.recountRefs(ctx, r); err != nil {
			return nil, fmt.Errorf("backup %s deleted, but recounting the references of %s failed: %w; run volback repo-repair", b.ID, r.url, err)
		}
	}
	return r, nil
}

// unknownID reports whether ref is a full backup id the catalog does not have.
func (s *Service) unknownID(ref string) bool {
	if _, err := uuid.Parse(ref); err != nil || len(ref) != 36 {
		return false
	}
	err := s.cat.View(func(tx *index.Tx) error { _, err := tx.Backup(ref); return err })
	return errors.Is(err, index.ErrNotFound)
}

// deleteUnknown handles a backup-delete of an id the catalog does not
// know: with force, a record of that id is removed from the repository
// (its chunks become garbage); without, the refusal says what to do.
func (s *Service) deleteUnknown(ctx context.Context, ref string, force bool, notFound error) (*BackupView, *repository, error) {
	for _, z := range s.cfg.ZoneNames() {
		r, err := s.repoFor(ctx, z)
		if err != nil {
			continue
		}
		has, err := r.store.HasRecord(ctx, ref)
		if err != nil || !has {
			continue
		}
		if !force {
			return nil, nil, errorf(ErrNotFound, "backup %s is not in the catalog, but repository %s holds its record (a backup of another volback home, or one not imported yet): import it (backup-import, catalog-rebuild), or, if it is garbage, remove it for good with backup-delete --force %s", ref, r.url, ref)
		}
		lk, err := s.lock(ctx, r, false, "backup-delete --force "+ref, lockWait)
		if err != nil {
			return nil, nil, err
		}
		err = r.store.DeleteBackupObjects(ctx, ref)
		lk.Release()
		if err != nil {
			return nil, nil, err
		}
		return &BackupView{ID: ref, Status: "deleted", Container: r.url}, r, nil
	}
	return nil, nil, notFound
}

// cancelCreating stops the job creating backup ref, if it is being
// created, and waits until its rollback has released every reference and
// given the volume its status back; the backup is then `error` and a
// plain delete removes it.
func (s *Service) cancelCreating(ctx context.Context, ref string) error {
	var b *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { b, err = findBackup(tx, caller(ctx), ref); return err }); err != nil {
		return err
	}
	if b.Status != index.StatusCreating {
		return nil
	}
	start := time.Now()
	if err := s.cancelJob(backupJob(b.ID), errForceDeleted, cancelWait); errors.Is(err, errJobGone) {
		return nil // stuck (a rollback that failed and waits): the forced delete finishes it
	} else if err != nil {
		return errorf(ErrInvalidState, "backup %s is creating and cannot be cancelled: %v; run backup-delete --force again, or restart the volback process that owns the catalog (it rolls the backup back when it starts)", b.ID, err)
	}
	s.event(ctx, "backup cancelled", "backup", b.ID, "volume", b.VolumeID, "project", b.ProjectID, "duration", since(start))
	return nil
}
