package service

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
)

// chain is a volume with a full backup and two incrementals, and the bytes
// each backup must restore.
type chain struct {
	ids    []string
	states [][]byte
	urls   []string
}

func makeChain(t *testing.T, s *Service) chain {
	t.Helper()
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 3<<20+4096, 9) // a short last chunk
	if _, err := s.Manage(ctx, ManageRequest{Name: "vol", Source: img}); err != nil {
		t.Fatal(err)
	}
	var c chain
	for i := range 3 {
		if i > 0 {
			scribble(t, img, data, 4, uint64(i))
		}
		b, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Name: "b" + string(rune('0'+i)), Incremental: i > 0}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := s.ExportBackup(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ev.BackupService != "volback.drivers.posix" {
			t.Fatalf("backup_service %q", ev.BackupService)
		}
		c.ids, c.states, c.urls = append(c.ids, b.ID), append(c.states, bytes.Clone(data)), append(c.urls, ev.BackupURL)
	}
	return c
}

// loseCatalog closes s, deletes its catalog directory (the repository
// stays) and opens a service on the same home.
func loseCatalog(t *testing.T, s *Service) *Service {
	t.Helper()
	cfg := s.cfg
	s.Close()
	if err := os.RemoveAll(filepath.Join(cfg.Home, "catalog")); err != nil {
		t.Fatal(err)
	}
	return reopen(t, cfg)
}

func reopen(t *testing.T, cfg Config) *Service {
	t.Helper()
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// catalogState is everything a refusal must leave as it was: backups,
// volumes and chunk entries.
func catalogState(t *testing.T, s *Service) string {
	t.Helper()
	var out []string
	err := s.cat.View(func(tx *index.Tx) error {
		bs, err := tx.Backups()
		for _, b := range bs {
			j, _ := json.Marshal(b)
			out = append(out, string(j))
		}
		if err != nil {
			return err
		}
		vs, err := tx.Volumes()
		for _, v := range vs {
			j, _ := json.Marshal(v)
			out = append(out, string(j))
		}
		if err != nil {
			return err
		}
		return tx.Chunks(s.repoID(t), func(cid chunkstore.ID, c index.Chunk) error {
			out = append(out, fmt.Sprintf("%s:%s:%d", cid, c.Pack, c.Refs))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

func (s *Service) repoID(t *testing.T) string {
	r, err := s.repoFor(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return r.store.Config().ID
}

func backupsOf(t *testing.T, s *Service) map[string]BackupView {
	t.Helper()
	bs, err := s.ListBackups(context.Background(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]BackupView{}
	for _, b := range bs {
		b.UpdatedAt = b.CreatedAt // differs by design
		out[b.ID] = b
	}
	return out
}

func TestExportImportAfterLosingCatalog(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s)
	before := backupsOf(t, s)
	s = loseCatalog(t, s)

	// Children first: imported, but restore waits for the parent.
	for i := 2; i >= 0; i-- {
		bv, err := s.ImportBackup(ctx, ImportRequest{BackupService: "volback.drivers.posix", BackupURL: c.urls[i]})
		if err != nil {
			t.Fatalf("import %d: %v", i, err)
		}
		if bv.Status != index.StatusAvailable || bv.ID != c.ids[i] {
			t.Fatalf("import %d: %s %s", i, bv.ID, bv.Status)
		}
		if i > 0 {
			_, err := s.Restore(ctx, RestoreRequest{Backup: c.ids[i]}, nil)
			if err == nil || !strings.Contains(err.Error(), "import backup "+c.ids[i-1]+" first") {
				t.Fatalf("restore of %d before its parent: got %v", i, err)
			}
		}
		mustCheck(t, s)
	}
	after := backupsOf(t, s)
	for id, b := range before {
		a := after[id]
		a.UpdatedAt = b.UpdatedAt
		if !equalJSON(a, b) {
			t.Errorf("backup %s after import:\n%+v\nwant\n%+v", id, a, b)
		}
	}
	for i, id := range c.ids {
		if got := restoreBytes(t, s, id); !bytes.Equal(got, c.states[i]) {
			t.Fatalf("restore of imported backup %d differs", i)
		}
	}
	_, err := s.ImportBackup(ctx, ImportRequest{BackupService: "volback.drivers.posix", BackupURL: c.urls[0]})
	if err == nil || !strings.Contains(err.Error(), "Backup already exists in database.") {
		t.Fatalf("second import: got %v", err)
	}
	// Imported backups are ordinary: they delete (children first) and the
	// repository ends empty.
	for i := 2; i >= 0; i-- {
		if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{c.ids[i]}}); err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, s)
	if n := packCount(t, s); n != 0 {
		t.Errorf("%d packs left after deleting every imported backup", n)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// mutate rewrites the JSON of a backup_url.
func mutate(t *testing.T, url string, f func(map[string]any)) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(url)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, _ := json.Marshal(m)
	return base64.StdEncoding.EncodeToString(out)
}

func TestImportRefusals(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s)
	url := c.urls[1]
	raw, _ := base64.StdEncoding.DecodeString(url)
	s = loseCatalog(t, s)
	if _, err := s.ImportBackup(ctx, ImportRequest{BackupService: "volback.drivers.posix", BackupURL: c.urls[0]}); err != nil {
		t.Fatal(err)
	}
	state := catalogState(t, s)
	manifest := filepath.Join(s.cfg.Home, "repository", "manifests", c.ids[1])

	cases := []struct {
		name, service, url string
		setup              func() func()
		words              []string
	}{
		{name: "not base64", url: "not*base64!", words: []string{"not base64"}},
		{name: "not JSON", url: base64.StdEncoding.EncodeToString([]byte("hello")), words: []string{"not a JSON object"}},
		{name: "truncated JSON", url: base64.StdEncoding.EncodeToString(raw[:len(raw)/2]), words: []string{"not a JSON object"}},
		{name: "unknown field", url: mutate(t, url, func(m map[string]any) { m["swift_object"] = "x" }), words: []string{"unknown field", "swift_object"}},
		{name: "missing field", url: mutate(t, url, func(m map[string]any) { delete(m, "manifest_digest") }), words: []string{"manifest_digest"}},
		{name: "id not a UUID", url: mutate(t, url, func(m map[string]any) { m["id"] = "../../etc" }), words: []string{"not a UUID"}},
		{name: "negative size", url: mutate(t, url, func(m map[string]any) { m["size_bytes"] = -1 }), words: []string{"negative"}},
		{name: "newer format", url: mutate(t, url, func(m map[string]any) { m["format_version"] = 9 }), words: []string{"upgrade volback"}},
		{name: "wrong service", service: "cinder.backup.drivers.swift", url: url, words: []string{"cinder.backup.drivers.swift", "does not match"}},
		{name: "other repository", url: mutate(t, url, func(m map[string]any) { m["repository_id"] = "6f1c8a52-3f5e-4a1b-9c1d-2b7e8f9a0b1c" }),
			words: []string{"6f1c8a52-3f5e-4a1b-9c1d-2b7e8f9a0b1c", "belongs to another repository", "volback.toml"}},
		{name: "unconfigured repository", url: mutate(t, url, func(m map[string]any) {
			m["repository_id"], m["container"] = "6f1c8a52-3f5e-4a1b-9c1d-2b7e8f9a0b1c", "file:///srv/elsewhere"
		}), words: []string{"no configured zone", `repository = "file:///srv/elsewhere"`, "volback.toml"}},
		{name: "missing manifest", url: url, words: []string{"manifest", "missing"},
			setup: func() func() {
				if err := os.Rename(manifest, manifest+".away"); err != nil {
					t.Fatal(err)
				}
				return func() { os.Rename(manifest+".away", manifest) }
			}},
		{name: "other digest", url: mutate(t, url, func(m map[string]any) { m["manifest_digest"] = strings.Repeat("ab", 32) }), words: []string{"digest"}},
		{name: "tampered size", url: mutate(t, url, func(m map[string]any) { m["size_bytes"] = m["size_bytes"].(float64) + 65536 }),
			words: []string{"size_bytes", "altered"}},
		{name: "tampered chunk size", url: mutate(t, url, func(m map[string]any) { m["chunk_size"] = 131072 }), words: []string{"chunk_size"}},
		{name: "existing id", url: c.urls[0], words: []string{"Backup already exists in database."}},
		{name: "chunk in no pack", url: c.urls[2], words: []string{"in no pack", c.ids[2]},
			setup: func() func() {
				// the second incremental's only new pack
				var moved []string
				packs := map[string]bool{}
				filepath.Walk(filepath.Join(s.cfg.Home, "repository", "packs"), func(p string, fi os.FileInfo, err error) error {
					if err == nil && fi.Mode().IsRegular() {
						packs[p] = true
					}
					return nil
				})
				known := map[string]bool{}
				s.cat.View(func(tx *index.Tx) error {
					return tx.Chunks(s.repoID(t), func(_ chunkstore.ID, c index.Chunk) error {
						known[c.Pack.String()] = true
						return nil
					})
				})
				for p := range packs {
					if !known[filepath.Base(p)] {
						os.Rename(p, p+".away")
						moved = append(moved, p)
					}
				}
				if len(moved) == 0 {
					t.Fatal("no pack outside the imported full backup to hide")
				}
				return func() {
					for _, p := range moved {
						os.Rename(p+".away", p)
					}
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			undo := func() {}
			if tc.setup != nil {
				undo = tc.setup()
			}
			svc := tc.service
			if svc == "" {
				svc = "volback.drivers.posix"
			}
			_, err := s.ImportBackup(ctx, ImportRequest{BackupService: svc, BackupURL: tc.url})
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if got := catalogState(t, s); got != state {
				t.Errorf("refused import changed the catalog")
			}
			undo() // the damage the case set up, before checking the rest
			mustCheck(t, s)
		})
	}
	// URL-safe, unpadded, wrapped: all accepted.
	u := strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(url), "=")
	u = u[:40] + "\n" + u[40:]
	if _, err := s.ImportBackup(ctx, ImportRequest{BackupService: "volback.drivers.posix", BackupURL: u}); err != nil {
		t.Fatalf("URL-safe unpadded backup_url: %v", err)
	}
	if got := restoreBytes(t, s, c.ids[1]); !bytes.Equal(got, c.states[1]) {
		t.Fatal("restore after refusals differs")
	}
	mustCheck(t, s)
}

// TestImportInterrupted leaves an import as a crash would (part or all of
// its references counted, still `creating`) and checks recovery drops the
// references and the catalog entry but keeps the repository's objects, and
// that the import then succeeds.
func TestImportInterrupted(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s)
	s = loseCatalog(t, s)
	rec, err := DecodeBackupURL(c.urls[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []int{1, -1} {
		r, err := s.repoForRecord(ctx, &rec.Record)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.verifyRecord(ctx, r, &rec.Record)
		if err != nil {
			t.Fatal(err)
		}
		scope, err := s.locateMissing(ctx, r, rec.ID, m)
		if err != nil || scope == "" {
			t.Fatalf("nothing staged: %v", err)
		}
		ids := manifestRefs(t, s, r, rec.ID, m)
		n := len(ids)
		if part > 0 {
			n = len(ids) / 2
		}
		b := backupFromRecord(&rec.Record)
		if err := s.update(func(tx *index.Tx) error { return tx.PutBackup(b) }); err != nil {
			t.Fatal(err)
		}
		staged := func(tx *index.Tx, id chunkstore.ID) (chunkstore.Location, bool, error) { return tx.Staged(scope, id) }
		if err := s.countRefs(r, b, 0, ids[:n], staged, nil); err != nil {
			t.Fatal(err)
		}
		cfg := s.cfg
		s.Close()
		s = reopen(t, cfg) // recovery
		if bs := backupsOf(t, s); len(bs) != 0 {
			t.Fatalf("recovery left %d backups", len(bs))
		}
		for _, name := range []string{"backups", "manifests"} {
			if _, err := os.Stat(filepath.Join(cfg.Home, "repository", name, rec.ID)); err != nil {
				t.Fatalf("recovery of an interrupted import removed its %s object: %v", name, err)
			}
		}
		if st := catalogState(t, s); st != "" {
			t.Fatalf("recovery left chunk entries:\n%s", st)
		}
		mustCheck(t, s)
	}
	if _, err := s.ImportBackup(ctx, ImportRequest{BackupService: "volback.drivers.posix", BackupURL: c.urls[0]}); err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, s, c.ids[0]); !bytes.Equal(got, c.states[0]) {
		t.Fatal("restore after recovered import differs")
	}
	mustCheck(t, s)
}

func TestExportRefusesUnavailable(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s)
	if err := s.setBackupStatus(c.ids[0], index.StatusError); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ExportBackup(ctx, c.ids[0]); err == nil || !strings.Contains(err.Error(), "only available backups can be exported") {
		t.Fatalf("export of an error backup: %v", err)
	}
}

func FuzzDecodeBackupURL(f *testing.F) {
	valid := ExportRecord{Record: chunkstore.Record{FormatVersion: 1, ID: "22b9a22c-6980-4807-9d59-a052b07977c4",
		VolumeID: "27b3cab7-8d60-4b06-beba-7b0daf5ab168", VolumeName: "v", SizeBytes: 3000000, ObjectCount: 46,
		Container: "file:///tmp/r", RepositoryID: "e3bfa0a5-6744-4eea-9b68-c42d5751a564", ChunkSize: 65536,
		ManifestDigest: strings.Repeat("3c", 32)}, Service: "volback.drivers.posix", Status: "available", Size: 1}
	f.Add(EncodeBackupURL(&valid))
	inc := valid
	inc.ID, inc.ParentID, inc.IsIncremental = "50f820df-c700-4a59-aa35-6a0f744868ff", valid.ID, true
	f.Add(strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(recordJSON(&inc))), "="))
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"format_version":1,"id":"x"}`)))
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"format_version":1,"created_at":"10000-01-01T00:00:00Z"}`)))
	f.Add("e30=")
	f.Add("!!")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := DecodeBackupURL(s)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted record fails Validate: %v", err)
		}
		enc := EncodeBackupURL(r) // must not panic
		r2, err := DecodeBackupURL(enc)
		if err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
		if EncodeBackupURL(r2) != enc {
			t.Fatal("record does not round-trip")
		}
	})
}

// recordJSON is the JSON inside a backup_url.
func recordJSON(r *ExportRecord) string {
	b, _ := json.Marshal(r)
	return string(b)
}
