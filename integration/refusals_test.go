package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// seeded is a home with one 4 MiB random volume "v" and one backup of it.
func seeded(t *testing.T) (home, img string, v Volume, b Backup) {
	t.Helper()
	home = newHome(t)
	img = filepath.Join(t.TempDir(), "v.img")
	randomFile(t, img, 4*mib, 60)
	v = manage(t, home, "v", img)
	b = backupCreate(t, home, "v")
	return home, img, v, b
}

// records lists the backup records in a repository directory.
func records(t *testing.T, repo string) []string {
	t.Helper()
	return filesUnder(t, filepath.Join(repo, "backups"))
}

// TestRefuseMissing names a volume or backup that does not exist in every
// verb that takes one; each is refused naming it and changes nothing.
func TestRefuseMissing(t *testing.T) {
	home, _, _, b := seeded(t)
	before := state(t, home)
	recs := records(t, repoDir(home))
	const missing = "no-such-thing"
	cases := [][]string{
		{"show", missing},
		{"delete", missing},
		{"backup-create", missing},
		{"backup-show", missing},
		{"backup-restore", missing},
		{"backup-restore", "--name", "r", missing},
		{"backup-restore", "--volume", missing, b.ID},
		{"backup-delete", missing},
		{"backup-delete", "00000000-0000-0000-0000-000000000000"},
		{"create", "--name", "c", "--backup-id", missing, "0"},
	}
	for _, args := range cases {
		_, stderr, code := run(t, home, args...)
		named := missing
		if !slices.Contains(args, missing) {
			named = args[len(args)-1]
		}
		assertRefused(t, strings.Join(args, " "), stderr, code, named)
	}
	if after := state(t, home); after != before {
		t.Errorf("refusals changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
	if got := records(t, repoDir(home)); !slices.Equal(got, recs) {
		t.Errorf("refusals changed the repository's records: %v -> %v", recs, got)
	}
}

// TestRefuseBadSource refuses to manage a directory, a character device and
// a missing path.
func TestRefuseBadSource(t *testing.T) {
	home := newHome(t)
	before := state(t, home)
	dir := t.TempDir()
	for _, src := range []string{dir, "/dev/null", filepath.Join(dir, "missing.img")} {
		_, stderr, code := run(t, home, "manage", "--name", "bad", src)
		assertRefused(t, "manage "+src, stderr, code, src)
	}
	if after := state(t, home); after != before {
		t.Errorf("refused manage changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
}

// TestRefuseRestoreTooSmall refuses a restore over a volume smaller than
// the backup and leaves that volume as it was.
func TestRefuseRestoreTooSmall(t *testing.T) {
	home, _, _, b := seeded(t)
	small := filepath.Join(t.TempDir(), "small.img")
	randomFile(t, small, 2*mib, 61)
	sum := sha256File(t, small)
	target := manage(t, home, "small", small)
	before := state(t, home)

	_, stderr, code := run(t, home, "backup-restore", "--volume", "small", b.ID)
	assertRefused(t, "restore over a smaller volume", stderr, code)
	if !strings.Contains(stderr, "small") && !strings.Contains(stderr, target.ID) {
		t.Errorf("refusal %q names neither the target volume's name nor its id", stderr)
	}
	if after := state(t, home); after != before {
		t.Errorf("refused restore changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
	if got := sha256File(t, small); got != sum {
		t.Errorf("refused restore wrote into the target volume")
	}
}

// TestRefuseReadOnlyRepository fails a backup into a repository that has
// become read-only, leaving no available record; once writable it works.
func TestRefuseReadOnlyRepository(t *testing.T) {
	requireRoot(t)
	home, mnt, repo, img := tmpfsRepository(t, "64m", 4*mib, 70)
	first := backupCreate(t, home, "v")
	recs := records(t, repo)

	writeRandom(t, img, 0, 4*mib, 71) // new data, so new chunks must be written
	sh(t, "mount", "-o", "remount,ro", mnt)
	_, stderr, code := run(t, home, "backup-create", "v")
	assertRefused(t, "backup-create into a read-only repository", stderr, code, "read-only")
	assertFailedBackups(t, home, first.ID, "read-only")
	if got := records(t, repo); !slices.Equal(got, recs) {
		t.Errorf("records changed in a read-only repository: %v -> %v", recs, got)
	}

	// A fresh home whose repository was never written is refused as well.
	fresh := newHome(t)
	useRepository(t, fresh, filepath.Join(mnt, "never-made"))
	manage(t, fresh, "v", img)
	_, stderr, code = run(t, fresh, "backup-create", "v")
	assertRefused(t, "backup-create into a new read-only repository", stderr, code, "read-only")
	assertFailedBackups(t, fresh, "", "read-only")

	sh(t, "mount", "-o", "remount,rw", mnt)
	b := backupCreate(t, home, "v")
	r := restoreNew(t, home, b.ID, "r")
	compareFiles(t, img, r.Path, 4*mib)
}

// assertFailedBackups checks that every backup other than ok is in status
// error with a fail_reason mentioning reason (a failed backup may also
// leave no record at all).
func assertFailedBackups(t *testing.T, home, ok, reason string) []Backup {
	t.Helper()
	var list []Backup
	runJSON(t, home, &list, "backup-list")
	var failed []Backup
	for _, b := range list {
		if b.ID == ok {
			continue
		}
		failed = append(failed, b)
		if b.Status != "error" {
			t.Errorf("failed backup %s has status %q, want error", b.ID, b.Status)
		}
		if !strings.Contains(strings.ToLower(b.FailReason), reason) {
			t.Errorf("failed backup %s fail_reason %q does not mention %q", b.ID, b.FailReason, reason)
		}
	}
	return failed
}

// TestDiskFull fills the repository's file system mid-backup: the backup
// ends in error naming the full disk, leaves no record, and once there is
// room a backup succeeds and restores.
func TestDiskFull(t *testing.T) {
	requireRoot(t)
	home, mnt, repo, img := tmpfsRepository(t, "8m", 64*mib, 80)

	_, stderr, code := run(t, home, "backup-create", "v")
	assertRefused(t, "backup-create onto a full disk", stderr, code, "no space")
	failed := assertFailedBackups(t, home, "", "no space")
	if len(failed) != 1 {
		t.Errorf("backup-list shows %d failed backups, want the 1 in status error", len(failed))
	}
	if recs := records(t, repo); len(recs) != 0 {
		t.Errorf("a failed backup left records in the repository: %v", recs)
	}
	for _, f := range filesUnder(t, repo) {
		if strings.Contains(filepath.Base(f), "tmp") {
			t.Errorf("a failed backup left a temporary file in the repository: %s", f)
		}
	}
	for _, b := range failed {
		mustRun(t, home, "backup-delete", b.ID)
	}

	sh(t, "mount", "-o", "remount,size=160m", mnt)
	b := backupCreate(t, home, "v")
	r := restoreNew(t, home, b.ID, "r")
	compareFiles(t, img, r.Path, 64*mib)
}

// TestRefuseUnknownFormat refuses -f xml as a usage error.
func TestRefuseUnknownFormat(t *testing.T) {
	home := newHome(t)
	stdout, stderr, code := run(t, home, "-f", "xml", "list")
	assertUsage(t, "-f xml", stdout, stderr, code, "", "xml")
}

// TestRefuseWrongArguments: a verb given the wrong number of arguments or
// a bad SIZE is a usage error (exit 2) naming what it expected.
func TestRefuseWrongArguments(t *testing.T) {
	home := newHome(t)
	for _, tc := range []struct {
		args  []string
		words []string
	}{
		{[]string{"show"}, []string{"show", "VOLUME"}},
		{[]string{"backup-restore", "a", "b"}, []string{"backup-restore", "BACKUP"}},
		{[]string{"create", "--name", "n", "ten"}, []string{"ten"}},
	} {
		stdout, stderr, code := run(t, home, tc.args...)
		assertUsage(t, strings.Join(tc.args, " "), stdout, stderr, code, tc.args[0], tc.words...)
	}
}

// TestRefuseAmbiguousName refuses a name two volumes share, listing both
// ids; each id prefix still works.
func TestRefuseAmbiguousName(t *testing.T) {
	home := newHome(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	makeSparse(t, a, mib)
	makeSparse(t, b, mib)
	va := manage(t, home, "twin", a)
	vb := manage(t, home, "twin", b)
	before := state(t, home)
	for _, verb := range []string{"show", "backup-create", "delete"} {
		_, stderr, code := run(t, home, verb, "twin")
		assertRefused(t, verb+" of an ambiguous name", stderr, code, "twin", va.ID, vb.ID)
	}
	if after := state(t, home); after != before {
		t.Errorf("refusals changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
	if got := showVolume(t, home, va.ID[:8]); got.ID != va.ID {
		t.Errorf("show %s (id prefix) gave %s, want %s", va.ID[:8], got.ID, va.ID)
	}

	// Backups named alike are refused the same way.
	var b1, b2 Backup
	runJSON(t, home, &b1, "backup-create", "--name", "nightly", va.ID)
	runJSON(t, home, &b2, "backup-create", "--name", "nightly", vb.ID)
	before = state(t, home)
	for _, verb := range []string{"backup-show", "backup-restore", "backup-delete"} {
		_, stderr, code := run(t, home, verb, "nightly")
		assertRefused(t, verb+" of an ambiguous backup name", stderr, code, "nightly", b1.ID, b2.ID)
	}
	if after := state(t, home); after != before {
		t.Errorf("refusals changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
}

// TestCorruptChunkDetected flips bytes inside a pack: restore fails naming
// the backup and the byte offset instead of writing bad data silently.
func TestCorruptChunkDetected(t *testing.T) {
	home, _, v, b := seeded(t)
	packsDir := filepath.Join(repoDir(home), "packs")
	packs := filesUnder(t, packsDir)
	if len(packs) == 0 {
		t.Fatalf("no pack files under %s after a backup of 4 MiB of random data", packsDir)
	}
	// Past the 8-byte pack header and the first blob's 5-byte header: the
	// first chunk's payload (random data is stored raw).
	p := filepath.Join(packsDir, packs[0])
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		// Packs are immutable and may be read-only; the test is root anyway.
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		if f, err = os.OpenFile(p, os.O_RDWR, 0); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 16)
	if _, err := f.ReadAt(buf, 1000); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] ^= 0xff
	}
	if _, err := f.WriteAt(buf, 1000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	exec.Command("sync").Run()

	_, stderr, code := run(t, home, "backup-restore", "--name", "r", b.ID)
	assertRefused(t, "restore of a corrupted backup", stderr, code, b.ID)
	if !regexp.MustCompile(`(?i)offset\D{0,3}\d+`).MatchString(stderr) {
		t.Errorf("corruption error %q does not give a byte offset", stderr)
	}
	// The volume the failed restore was writing must not look usable.
	var vols []Volume
	runJSON(t, home, &vols, "list")
	for _, o := range vols {
		if o.ID != v.ID && o.Status == "available" {
			t.Errorf("volume %s (%s) from a failed restore has status available", o.ID, o.Name)
		}
	}
}
