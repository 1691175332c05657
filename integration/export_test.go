package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exported is what backup-export prints.
type exported struct {
	BackupService string `json:"backup_service"`
	BackupURL     string `json:"backup_url"`
}

// drChain is a home with a volume, a full backup and two incrementals
// (scribbled between), each exported, and the sha256 each must restore.
type drChain struct {
	home    string
	ids     []string
	sums    []string
	exports []exported
}

func newDRChain(t *testing.T) drChain {
	t.Helper()
	c := drChain{home: newHome(t)}
	img := filepath.Join(t.TempDir(), "vol.img")
	randomFile(t, img, 6*mib+12288, 70) // not a whole number of chunks
	manage(t, c.home, "vol", img)
	for i := range 3 {
		args := []string{"backup-create", "--name", fmt.Sprintf("b%d", i)}
		if i > 0 {
			writeRandom(t, img, int64(i)*mib+7*kib, 200*kib, uint64(80+i))
			writeRandom(t, img, 5*mib, 64*kib, uint64(90+i))
			args = append(args, "--incremental")
		}
		var b Backup
		runJSON(t, c.home, &b, append(args, "vol")...)
		if b.Status != "available" || b.IsIncremental != (i > 0) {
			t.Fatalf("backup %d: status %s incremental %v", i, b.Status, b.IsIncremental)
		}
		var e exported
		runJSON(t, c.home, &e, "backup-export", b.ID)
		if e.BackupService != "volback.drivers.posix" || e.BackupURL == "" {
			t.Fatalf("backup-export %s printed %+v", b.ID, e)
		}
		c.ids, c.sums, c.exports = append(c.ids, b.ID), append(c.sums, sha256File(t, img)), append(c.exports, e)
	}
	return c
}

// loseCatalog deletes the catalog directory and keeps the repository.
func (c drChain) loseCatalog(t *testing.T) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(c.home, "catalog")); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, c.home, "-f", "json", "backup-list"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("backup-list after deleting the catalog: %s", out)
	}
}

func (c drChain) importBackup(t *testing.T, i int) {
	t.Helper()
	var b Backup
	runJSON(t, c.home, &b, "backup-import", c.exports[i].BackupService, c.exports[i].BackupURL)
	if b.ID != c.ids[i] || b.Status != "available" {
		t.Fatalf("backup-import %d printed id %s status %s, want %s available", i, b.ID, b.Status, c.ids[i])
	}
}

// checkRestore restores backup i into a new volume and compares bytes.
func (c drChain) checkRestore(t *testing.T, i int, name string) {
	t.Helper()
	v := restoreNew(t, c.home, c.ids[i], name)
	if got := sha256File(t, v.Path); got != c.sums[i] {
		t.Fatalf("restore of backup %d: sha256 %s, want %s", i, got, c.sums[i])
	}
}

// TestExportImportAfterLosingCatalog exports a full backup and two
// incrementals, deletes the catalog, and imports them parent first; then
// loses the catalog again and imports children first, where restore waits
// for each parent.
func TestExportImportAfterLosingCatalog(t *testing.T) {
	c := newDRChain(t)

	c.loseCatalog(t)
	for i := range 3 {
		c.importBackup(t, i)
	}
	for i := range 3 {
		c.checkRestore(t, i, fmt.Sprintf("a%d", i))
	}
	repoCheck(t, c.home)

	c.loseCatalog(t)
	c.importBackup(t, 2)
	_, stderr, code := run(t, c.home, "backup-restore", "--name", "early", c.ids[2])
	assertRefused(t, "restore before the parent is imported", stderr, code, c.ids[1], "import backup "+c.ids[1]+" first")
	c.importBackup(t, 1)
	c.checkRestore(t, 2, "b2") // its parent is back
	_, stderr, code = run(t, c.home, "backup-restore", "--name", "early", c.ids[1])
	assertRefused(t, "restore before the parent is imported", stderr, code, "import backup "+c.ids[0]+" first")
	c.importBackup(t, 0)
	for i := range 3 {
		c.checkRestore(t, i, fmt.Sprintf("c%d", i))
	}
	repoCheck(t, c.home)

	var shown map[string]any
	runJSON(t, c.home, &shown, "backup-show", c.ids[0])
	if shown["has_dependent_backups"] != true {
		t.Errorf("imported full backup: has_dependent_backups = %v", shown["has_dependent_backups"])
	}
}

// backupKeys is what a rebuilt catalog must list as before.
func backupKeys(t *testing.T, home string) string {
	t.Helper()
	var list []map[string]any
	runJSON(t, home, &list, "backup-list")
	var out []string
	for _, b := range list {
		out = append(out, fmt.Sprintf("%v %v %v %v %v %v %v", b["id"], b["name"], b["size_bytes"], b["parent_id"],
			b["is_incremental"], b["volume_id"], b["created_at"]))
	}
	return strings.Join(out, "\n")
}

func TestCatalogRebuild(t *testing.T) {
	c := newDRChain(t)
	before := backupKeys(t, c.home)
	var vols []Volume
	runJSON(t, c.home, &vols, "list")

	c.loseCatalog(t)
	var rep map[string]any
	runJSON(t, c.home, &rep, "catalog-rebuild")
	if rep["backups"] != 3.0 || rep["backups_imported"] != 3.0 || rep["volumes_created"] != 1.0 {
		t.Errorf("catalog-rebuild reported %v", rep)
	}
	if got := backupKeys(t, c.home); got != before {
		t.Fatalf("backup-list after catalog-rebuild:\n%s\nwant\n%s", got, before)
	}
	v := showVolume(t, c.home, vols[0].ID)
	if v.Name != "vol" || v.Path != "" {
		t.Errorf("rebuilt volume %+v: want a placeholder named vol", v)
	}
	for i := range 3 {
		c.checkRestore(t, i, fmt.Sprintf("r%d", i))
	}
	repoCheck(t, c.home)

	_, stderr, code := run(t, c.home, "catalog-rebuild")
	assertRefused(t, "catalog-rebuild into a catalog with backups", stderr, code, "already has", "move")
}

// TestImportRefusals checks each bad import is refused with a one-line
// reason and writes nothing.
func TestImportRefusals(t *testing.T) {
	c := newDRChain(t)
	c.loseCatalog(t)
	c.importBackup(t, 0)
	before := state(t, c.home)
	svc, url := c.exports[1].BackupService, c.exports[1].BackupURL
	raw, err := base64.StdEncoding.DecodeString(url)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return base64.StdEncoding.EncodeToString(b)
	}
	manifest := filepath.Join(repoDir(c.home), "manifests", c.ids[1])

	cases := []struct {
		name, service, url string
		hide               string // a file moved away during the attempt
		words              []string
	}{
		{"not base64", svc, "%%%not-base64%%%", "", []string{"not base64"}},
		{"not JSON", svc, base64.StdEncoding.EncodeToString([]byte("<xml/>")), "", []string{"not a JSON object"}},
		{"truncated JSON", svc, base64.StdEncoding.EncodeToString(raw[:len(raw)-20]), "", []string{"not a JSON object"}},
		{"wrong service", "cinder.backup.drivers.swift", url, "", []string{"cinder.backup.drivers.swift", "backup_service"}},
		{"other repository", svc, edit(func(m map[string]any) { m["repository_id"] = "0b1c6f1c-8a52-4f5e-8a1b-9c1d2b7e8f9a" }), "",
			[]string{"0b1c6f1c-8a52-4f5e-8a1b-9c1d2b7e8f9a", "volback.toml"}},
		{"missing manifest", svc, url, manifest, []string{"manifests/" + c.ids[1], "missing"}},
		{"tampered size", svc, edit(func(m map[string]any) { m["size_bytes"] = m["size_bytes"].(float64) - 4096 }), "",
			[]string{"size_bytes", "altered"}},
		{"existing id", svc, c.exports[0].BackupURL, "", []string{c.ids[0], "Backup already exists in database."}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.hide != "" {
				if err := os.Rename(tc.hide, tc.hide+".away"); err != nil {
					t.Fatal(err)
				}
				defer os.Rename(tc.hide+".away", tc.hide)
			}
			_, stderr, code := run(t, c.home, "backup-import", tc.service, tc.url)
			assertRefused(t, "backup-import: "+tc.name, stderr, code, tc.words...)
			if got := state(t, c.home); got != before {
				t.Errorf("refused import changed the catalog:\n%s\nwant\n%s", got, before)
			}
		})
	}
	repoCheck(t, c.home)
	// The untouched record still imports, URL-safe and unpadded.
	u := strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(url), "=")
	mustRun(t, c.home, "backup-import", svc, u)
	c.checkRestore(t, 1, "after")
	repoCheck(t, c.home)
}
