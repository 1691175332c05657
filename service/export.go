package service

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
)

// ExportRecord is what a backup_url holds (base64 of its JSON): the
// repository's backup record (Cinder's field names plus repository id and
// URL, chunk size, manifest digest and format version) and the Cinder
// fields derived from it.
type ExportRecord struct {
	chunkstore.Record
	Service         string `json:"service"`          // backup_service: the repository driver
	Status          string `json:"status"`           // always "available"
	Size            int64  `json:"size"`             // GiB, rounded up; informational
	ServiceMetadata string `json:"service_metadata"` // the record's and manifest's object names
}

// ExportView is what backup-export prints.
type ExportView struct {
	BackupService string `json:"backup_service"`
	BackupURL     string `json:"backup_url"`
}

// ImportRequest is backup-import.
type ImportRequest struct {
	BackupService string `json:"backup_service"`
	BackupURL     string `json:"backup_url"`
}

// maxBackupURL bounds what DecodeBackupURL reads; a record is under 2 KiB.
const maxBackupURL = 64 << 10

// requiredFields must be present in an imported record: without them the
// data cannot be found or checked.
var requiredFields = []string{"format_version", "id", "volume_id", "size_bytes", "created_at",
	"repository_id", "container", "chunk_size", "manifest_digest"}

// EncodeBackupURL is the standard base64 of the record's JSON.
func EncodeBackupURL(r *ExportRecord) string {
	b, err := json.Marshal(r)
	if err != nil { // only times outside year 0..9999, which Validate refuses
		panic(fmt.Sprintf("service: EncodeBackupURL %s: %v", r.ID, err))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// DecodeBackupURL parses a backup_url: standard or URL-safe base64, padded
// or not (whitespace ignored), of a JSON object. The JSON is strict: unknown
// fields are refused (a record from another tool or a newer volback must not
// be half understood), the required fields must be present, and the record
// must pass Validate. A newer format_version is refused with ErrVersion.
func DecodeBackupURL(s string) (*ExportRecord, error) {
	const redo = "pass the backup_url exactly as backup-export printed it"
	if len(s) > maxBackupURL {
		return nil, errorf(ErrUsage, "backup_url is %d bytes, more than a backup record can be (%d); %s", len(s), maxBackupURL, redo)
	}
	s = strings.Join(strings.Fields(s), "")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	raw, err := enc.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, errorf(ErrUsage, "backup_url is not base64: %v; %s", err, redo)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, errorf(ErrUsage, "backup_url does not hold a backup record (not a JSON object: %v); %s", err, redo)
	}
	var version struct {
		V int `json:"format_version"`
	}
	if err := json.Unmarshal(fields["format_version"], &version); err == nil && version.V > chunkstore.RecordVersion {
		return nil, fmt.Errorf("%w: backup_url holds a record of format_version %d and this volback reads version %d; upgrade volback",
			chunkstore.ErrVersion, version.V, chunkstore.RecordVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var r ExportRecord
	if err := dec.Decode(&r); err != nil {
		return nil, errorf(ErrUsage, "backup_url does not hold a volback backup record: %v; %s", err, redo)
	}
	for _, f := range requiredFields {
		if v, ok := fields[f]; !ok || string(v) == "null" {
			return nil, errorf(ErrUsage, "backup_url: the backup record has no %q field; %s", f, redo)
		}
	}
	if err := r.Validate(); err != nil {
		return nil, errorf(ErrUsage, "backup_url: %w; %s", err, redo)
	}
	return &r, nil
}

// Validate checks the record as DecodeBackupURL does.
func (r *ExportRecord) Validate() error {
	if err := r.Record.Validate(); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"volume_id", r.VolumeID}, {"repository_id", r.RepositoryID}} {
		if _, err := uuid.Parse(f.v); err != nil || len(f.v) != 36 {
			return fmt.Errorf("backup record %s: %s %q is not a UUID", r.ID, f.name, f.v)
		}
	}
	if r.IsIncremental {
		if _, err := uuid.Parse(r.ParentID); err != nil || len(r.ParentID) != 36 {
			return fmt.Errorf("backup record %s: is_incremental is true but parent_id %q is not a UUID", r.ID, r.ParentID)
		}
		if r.ParentID == r.ID {
			return fmt.Errorf("backup record %s: is its own parent", r.ID)
		}
	} else if r.ParentID != "" {
		return fmt.Errorf("backup record %s: has parent_id %s but is_incremental is false", r.ID, r.ParentID)
	}
	if r.Size < 0 {
		return fmt.Errorf("backup record %s: size is negative (%d)", r.ID, r.Size)
	}
	if r.Status != "" && r.Status != index.StatusAvailable {
		return fmt.Errorf("backup record %s: status is %q; only available backups are exported", r.ID, r.Status)
	}
	if r.Container == "" {
		return fmt.Errorf("backup record %s: container (the repository URL) is empty", r.ID)
	}
	return nil
}

// ExportBackup returns the backup_service and backup_url that backup-import
// needs to register an available backup in another (or a rebuilt) catalog.
// The record comes from the repository, so the export also proves the
// backup's record object is there.
func (s *Service) ExportBackup(ctx context.Context, ref string) (*ExportView, error) {
	var b *index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { b, err = findBackup(tx, caller(ctx), ref); return err }); err != nil {
		return nil, err
	}
	if b.Status != index.StatusAvailable {
		return nil, errorf(ErrInvalidState, "backup %s is %s; only available backups can be exported (wait for it to finish, or export another backup)", b.ID, b.Status)
	}
	r, err := s.repoByID(ctx, b.RepositoryID, b.AvailabilityZone)
	if err != nil {
		return nil, err
	}
	rec, err := r.store.GetRecord(ctx, b.ID)
	if err != nil {
		return nil, fmt.Errorf("exporting backup %s: record object: %w; run volback repo-check", b.ID, err)
	}
	if rec.ID != b.ID || rec.ManifestDigest != b.ManifestDigest || rec.RepositoryID != b.RepositoryID {
		return nil, fmt.Errorf("exporting backup %s: the repository's record (id %s, manifest %s) differs from the catalog's (manifest %s); run volback repo-check",
			b.ID, rec.ID, rec.ManifestDigest, b.ManifestDigest)
	}
	er := &ExportRecord{Record: *rec, Service: r.store.DriverName(), Status: index.StatusAvailable,
		Size: GiB(rec.SizeBytes), ServiceMetadata: serviceMetadata(rec.ID)}
	return &ExportView{BackupService: er.Service, BackupURL: EncodeBackupURL(er)}, nil
}

func serviceMetadata(id string) string {
	b, _ := json.Marshal(map[string]string{"record": chunkstore.RecordName(id), "manifest": chunkstore.ManifestName(id)})
	return string(b)
}

// errBackupExists is Cinder's refusal of an import whose id is taken.
func errBackupExists(id string) error {
	return errorf(ErrInvalidState, "backup %s: Backup already exists in database. (delete it first to import it again)", id)
}

// ImportBackup registers an exported backup as `available` with its
// original id, counted against its project's backup quotas as in Cinder.
// Every check runs before anything is written, in this order: base64,
// JSON, quota, service name, repository, manifest and digest, size, chunk
// size, record object, id not taken, every chunk in a pack. An incremental
// whose parent is not in the catalog is imported marked MissingParent;
// restore refuses it until the parent is imported.
func (s *Service) ImportBackup(ctx context.Context, req ImportRequest) (*BackupView, error) {
	rec, err := DecodeBackupURL(req.BackupURL)
	if err != nil {
		return nil, err
	}
	if err := s.importQuota(&rec.Record); err != nil {
		return nil, err
	}
	if req.BackupService == "" {
		return nil, errorf(ErrUsage, "backup-import: BACKUP_SERVICE is empty; pass the backup_service backup-export printed")
	}
	if rec.Service != "" && rec.Service != req.BackupService {
		return nil, errorf(ErrUsage, "backup_service %q does not match the record's service %q; pass the backup_service backup-export printed with this backup_url",
			req.BackupService, rec.Service)
	}
	r, err := s.repoForRecord(ctx, &rec.Record)
	if err != nil {
		return nil, err
	}
	if name := r.store.DriverName(); name != req.BackupService {
		return nil, errorf(ErrUsage, "backup_service %q does not match the driver %q of repository %s, which holds backup %s; pass the backup_service backup-export printed",
			req.BackupService, name, r.url, rec.ID)
	}
	// No pack may go between locating the chunks and counting them.
	lk, err := s.lock(ctx, r, false, "backup-import "+rec.ID, lockWait)
	if err != nil {
		return nil, err
	}
	locked := true
	defer func() {
		if locked {
			lk.Release()
		}
	}()
	m, err := s.verifyRecord(ctx, r, &rec.Record)
	if err != nil {
		return nil, err
	}
	if err := s.matchRecordObject(ctx, r, &rec.Record); err != nil {
		return nil, err
	}
	if err := s.cat.View(func(tx *index.Tx) error {
		if _, err := tx.Backup(rec.ID); err == nil {
			return errBackupExists(rec.ID)
		} else if !errors.Is(err, index.ErrNotFound) {
			return err
		}
		return nil
	}); err != nil {
		return nil, err
	}
	scope, err := s.locateMissing(ctx, r, rec.ID, m)
	if err != nil {
		return nil, err
	}
	if scope != "" {
		defer s.cat.DropScope(scope)
	}
	b, err := s.commitImport(ctx, r, &rec.Record, m, scope, false)
	if b != nil && err != nil { // references were being counted: undo them with no backup running
		lk.Release()
		locked = false
		s.undoImport(ctx, r, b)
	}
	if err != nil {
		return nil, err
	}
	return s.ShowBackup(ctx, rec.ID)
}

// repoForRecord finds the configured repository whose config id is the
// record's repository_id.
func (s *Service) repoForRecord(ctx context.Context, rec *chunkstore.Record) (*repository, error) {
	var reached []string
	for _, z := range s.cfg.ZoneNames() {
		r, err := s.repoFor(ctx, z)
		if err != nil {
			reached = append(reached, fmt.Sprintf("zone %s: %v", z, err))
			continue
		}
		if r.store.Config().ID == rec.RepositoryID {
			return r, nil
		}
		if strings.TrimRight(r.url, "/") == strings.TrimRight(rec.Container, "/") {
			return nil, fmt.Errorf("backup %s was made in repository %s, but %s (zone %s) is repository %s: the backup_url belongs to another repository (or this one was re-initialised); add that repository as a zone in %s and retry",
				rec.ID, rec.RepositoryID, r.url, z, r.store.Config().ID, filepath.Join(s.cfg.Home, ConfigName))
		}
		reached = append(reached, fmt.Sprintf("zone %s: %s is repository %s", z, r.url, r.store.Config().ID))
	}
	return nil, fmt.Errorf("backup %s lives in repository %s at %s, which no configured zone serves (%s); add [zones.%s] repository = %q to %s and retry",
		rec.ID, rec.RepositoryID, rec.Container, strings.Join(reached, "; "), zoneFor(rec), rec.Container,
		filepath.Join(s.cfg.Home, ConfigName))
}

func zoneFor(rec *chunkstore.Record) string {
	if rec.AvailabilityZone != "" && !strings.ContainsAny(rec.AvailabilityZone, " .\"[]") {
		return rec.AvailabilityZone
	}
	return "NAME"
}

// verifyRecord reads the record's manifest from r and checks it is the one
// the record names and covers what the record says.
func (s *Service) verifyRecord(ctx context.Context, r *repository, rec *chunkstore.Record) (*chunkstore.Manifest, error) {
	name := chunkstore.ManifestName(rec.ID)
	m, digest, err := r.store.LoadManifest(ctx, rec.ID)
	if errors.Is(err, repoNotFound) {
		return nil, fmt.Errorf("backup %s: its manifest %s is missing from repository %s: the backup's data is incomplete and cannot be imported",
			rec.ID, name, r.url)
	}
	if err != nil && !errors.Is(err, chunkstore.ErrCorrupt) {
		return nil, fmt.Errorf("backup %s: reading manifest %s from %s: %w", rec.ID, name, r.url, err)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: manifest %s in %s: %w; the backup cannot be imported", rec.ID, name, r.url, err)
	}
	if digest.String() != rec.ManifestDigest {
		return nil, fmt.Errorf("backup %s: manifest %s in %s has digest %s, the record names %s: the record is not of this data (export it again)",
			rec.ID, name, r.url, digest, rec.ManifestDigest)
	}
	if m.Size != rec.SizeBytes {
		return nil, fmt.Errorf("backup %s: the record says size_bytes %d but its manifest covers %d bytes: the record was altered (export it again)",
			rec.ID, rec.SizeBytes, m.Size)
	}
	if m.ChunkSize != rec.ChunkSize || rec.ChunkSize != r.store.Config().ChunkSize {
		return nil, fmt.Errorf("backup %s: the record says chunk_size %d, its manifest %d, repository %s %d: the record was altered (export it again)",
			rec.ID, rec.ChunkSize, m.ChunkSize, r.url, r.store.Config().ChunkSize)
	}
	return m, nil
}

// matchRecordObject checks the repository still holds the backup's record
// (a deleted backup loses its record first) and that it names the same data.
func (s *Service) matchRecordObject(ctx context.Context, r *repository, rec *chunkstore.Record) error {
	name := chunkstore.RecordName(rec.ID)
	stored, err := r.store.GetRecord(ctx, rec.ID)
	if errors.Is(err, repoNotFound) {
		return fmt.Errorf("backup %s: its record %s is missing from repository %s: the backup was deleted (or its delete was interrupted) and cannot be imported",
			rec.ID, name, r.url)
	}
	if err != nil && !errors.Is(err, chunkstore.ErrCorrupt) {
		return fmt.Errorf("backup %s: reading record %s from %s: %w", rec.ID, name, r.url, err)
	}
	if err != nil {
		return fmt.Errorf("backup %s: record %s in %s: %w", rec.ID, name, r.url, err)
	}
	if stored.ManifestDigest != rec.ManifestDigest || stored.VolumeID != rec.VolumeID || stored.ParentID != rec.ParentID ||
		stored.SizeBytes != rec.SizeBytes || stored.ChunkSize != rec.ChunkSize || stored.RepositoryID != rec.RepositoryID {
		return fmt.Errorf("backup %s: the backup_url differs from the repository's record %s (volume, parent, size or manifest): the backup_url was altered (export it again)",
			rec.ID, name)
	}
	return nil
}
