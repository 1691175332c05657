package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// GCReport is what repo-gc prints per repository.
type GCReport struct {
	Repository     string `json:"repository"`
	PacksDeleted   int    `json:"packs_deleted"`
	PacksRepacked  int    `json:"packs_repacked"`
	OrphansDeleted int    `json:"orphan_packs_deleted"`
	OrphansYoung   int    `json:"orphan_packs_kept_young"`
}

// CheckReport is what repo-check prints per repository.
type CheckReport struct {
	Problems          []string `json:"problems"`
	UnreferencedPacks int      `json:"unreferenced_packs"`
	UnreferencedBytes int64    `json:"unreferenced_bytes"`
}

// runEnv is run with extra environment variables (failpoints).
func runEnv(t *testing.T, home string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--home", home}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("volback %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = -int(ws.Signal())
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("volback %s: timed out", strings.Join(args, " "))
	}
	t.Logf("%s volback %s -> %d\nstderr: %s", strings.Join(env, " "), strings.Join(args, " "), code, strings.TrimSpace(errb.String()))
	return out.String(), errb.String(), code
}

// TestRepackKeepsLiveData is issue 8's reproduction through the binary:
// after a delete, repo-gc repacked a pack and then deleted the pack it had
// just written as an orphan; b2 could not be restored.
func TestRepackKeepsLiveData(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(home, "img1")
	randomFile(t, img, 4*mib, 1)
	manage(t, home, "v1", img)
	b1 := backupCreate(t, home, "v1")
	writeRandom(t, img, 0, 3*mib, 2) // dd if=/dev/urandom of=img1 bs=1M count=3 conv=notrunc
	b2 := backupCreate(t, home, "v1")
	want := sha256File(t, img)
	mustRun(t, home, "backup-delete", b1.ID)
	var gc []GCReport
	runJSON(t, home, &gc, "repo-gc")
	if len(gc) != 1 || gc[0].PacksRepacked != 1 {
		t.Errorf("repo-gc: %+v, want the one pack with a quarter live repacked", gc)
	}
	repoCheck(t, home)
	r := restoreNew(t, home, b2.ID, "r")
	if got := sha256File(t, r.Path); got != want {
		t.Fatal("b2 does not restore byte-exact after repo-gc")
	}
}

// TestMissingRepositoryDirectory: with the repository directory gone (an
// NFS export not mounted), backup-create is refused naming the zone, URL,
// repository id and the likely cause (and, as Cinder does, recorded as an
// `error` backup saying so), nothing is created in its place, and a
// restore says the same instead of "not configured in any zone", changing
// nothing.
func TestMissingRepositoryDirectory(t *testing.T) {
	home, _, _, b := seeded(t)
	repo := repoDir(home)
	id := repositoryID(t, repo)
	if err := os.Rename(repo, repo+".unmounted"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"backup-create", "v"}, {"backup-restore", "--name", "r", b.ID}} {
		before := state(t, home)
		_, stderr, code := run(t, home, args...)
		assertRefused(t, strings.Join(args, " "), stderr, code, "nova", id, "file://"+repo, "mount")
		if strings.Contains(stderr, "not configured in any zone") {
			t.Errorf("%s: the real cause is hidden: %s", args[0], stderr)
		}
		if _, err := os.Stat(repo); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s re-created the repository directory", args[0])
		}
		if args[0] == "backup-restore" {
			if after := state(t, home); after != before {
				t.Errorf("the refused restore changed the catalog:\nbefore %s\nafter  %s", before, after)
			}
			continue
		}
		failed := assertFailedBackups(t, home, b.ID, "mount")
		if len(failed) != 1 {
			t.Errorf("%d error backups recorded for the refused backup-create, want 1", len(failed))
		}
	}
	if err := os.Rename(repo+".unmounted", repo); err != nil {
		t.Fatal(err)
	}
	backupCreate(t, home, "v")
}

// repositoryID reads the id from a repository's config.
func repositoryID(t *testing.T, repo string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "config"))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(`"id":"`))
	if i < 0 {
		t.Fatalf("config %s has no id", b)
	}
	return string(b[i+6 : i+6+36])
}

// TestTwoHomesOneRepository: two homes (two hosts on one NFS export) on
// one repository directory. Backups in one run while repo-gc (forced to
// repack everything) runs in the other, and the other also deletes its
// backups; every backup restores in its home and repo-check is clean in
// both.
func TestTwoHomesOneRepository(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "shared")
	a, b := newHome(t), newHome(t)
	useRepository(t, a, repo)
	useRepository(t, b, repo)
	imgA, imgB := filepath.Join(a, "a.img"), filepath.Join(b, "b.img")
	randomFile(t, imgA, 96*mib, 201)
	randomFile(t, imgB, 24*mib, 202)
	manage(t, a, "va", imgA)
	manage(t, b, "vb", imgB)
	sums := map[string]string{}
	homeOf := map[string]string{}
	note := func(home, img string, bk Backup) { sums[bk.ID], homeOf[bk.ID] = sha256File(t, img), home }
	note(b, imgB, backupCreate(t, b, "vb"))
	old := backupCreate(t, b, "vb")
	writeRandom(t, imgB, 4*mib, 8*mib, 203)
	note(b, imgB, backupCreate(t, b, "vb"))
	mustRun(t, b, "backup-delete", old.ID) // b's packs now hold dead chunks: the GC will repack

	for round := range 3 {
		writeRandom(t, imgA, int64(round)*16*mib, 32*mib, uint64(210+round))
		want := sha256File(t, imgA)
		backup := start(t, a, "-q", "backup-create", "va")
		time.Sleep(time.Duration(100+200*round) * time.Millisecond)
		mustRun(t, b, "repo-gc", "--grace", "0", "--repack-below", "1")
		if err := backup.Wait(); err != nil {
			t.Fatalf("backup in home A during repo-gc in home B: %v", err)
		}
		var list []Backup
		runJSON(t, a, &list, "backup-list")
		if len(list) == 0 || list[0].Status != "available" {
			t.Fatalf("home A after round %d: %+v", round, list)
		}
		sums[list[0].ID], homeOf[list[0].ID] = want, a
	}
	for id, sum := range sums {
		r := restoreNew(t, homeOf[id], id, "r-"+id[:8])
		if got := sha256File(t, r.Path); got != sum {
			t.Fatalf("backup %s of home %s differs after the other home's repo-gc", id, homeOf[id])
		}
		mustRun(t, homeOf[id], "delete", r.ID)
	}
	repoCheck(t, a)
	repoCheck(t, b)
}

// TestTwoZonesOneRepository: zones nova and other name one repository; a
// repo-gc --zone other while a backup runs in nova must not take its packs
// (it did: the lock was per zone), and every backup restores.
func TestTwoZonesOneRepository(t *testing.T) {
	home := newHome(t)
	repo := filepath.Join(home, "repository")
	conf := fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\n[zones.other]\nrepository = \"file://%s\"\n", repo, repo)
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(home, "v.img")
	randomFile(t, img, 128*mib, 301)
	manage(t, home, "v", img)
	b1 := backupCreate(t, home, "v")
	writeRandom(t, img, 0, 96*mib, 302)
	want := sha256File(t, img)
	owner := startServe(t, home) // both commands below are its clients
	backup := start(t, home, "-q", "backup-create", "--name", "during-gc", "v")
	time.Sleep(300 * time.Millisecond)
	mustRun(t, home, "backup-delete", b1.ID)
	mustRun(t, home, "repo-gc", "--zone", "other", "--grace", "0", "--repack-below", "1")
	if err := backup.Wait(); err != nil {
		t.Fatalf("backup during repo-gc --zone other: %v", err)
	}
	var list []Backup
	runJSON(t, home, &list, "backup-list")
	if len(list) != 1 || list[0].Status != "available" {
		t.Fatalf("backups: %+v", list)
	}
	r := restoreNew(t, home, list[0].ID, "r")
	if got := sha256File(t, r.Path); got != want {
		t.Fatal("the backup that ran during repo-gc --zone other does not restore byte-exact")
	}
	repoCheck(t, home)
	owner.Process.Signal(syscall.SIGTERM)
	owner.Wait()
}

// TestDiskFullKeepsBackups: a repository file system that fills up during
// a backup fails it with a clear error and status error, harms no
// available backup, leaves no packs behind, and the next backup works
// once there is room.
func TestDiskFullKeepsBackups(t *testing.T) {
	requireRoot(t)
	home, mnt, repo, img := tmpfsRepository(t, "24m", 8*mib, 401)
	first := backupCreate(t, home, "v")
	firstSum := sha256File(t, img)
	used := dirSize(t, filepath.Join(repo, "packs"))

	randomFile(t, img, 48*mib, 402)
	_, stderr, code := run(t, home, "backup-create", "v")
	assertRefused(t, "backup-create onto a full disk", stderr, code, "disk is full", "free space")
	failed := assertFailedBackups(t, home, first.ID, "no space")
	if len(failed) != 1 {
		t.Fatalf("%d failed backups, want 1", len(failed))
	}
	if got := dirSize(t, filepath.Join(repo, "packs")); got != used {
		t.Errorf("the failed backup left %d bytes of packs behind", got-used)
	}
	r := restoreNew(t, home, first.ID, "r1")
	if sha256File(t, r.Path) != firstSum {
		t.Fatal("the backup made before the disk filled up does not restore")
	}
	repoCheck(t, home)
	sh(t, "mount", "-o", "remount,size=128m", mnt)
	b := backupCreate(t, home, "v")
	r = restoreNew(t, home, b.ID, "r2")
	compareFiles(t, img, r.Path, 48*mib)
}

// TestEmptyCatalogNotice: with the catalog directory deleted, backup-list
// still prints an empty list (exit 0) and says on stderr that the
// repository holds records and to run catalog-rebuild.
func TestEmptyCatalogNotice(t *testing.T) {
	home, _, _, _ := seeded(t)
	if err := os.RemoveAll(filepath.Join(home, "catalog")); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := run(t, home, "-f", "json", "backup-list")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("backup-list with a lost catalog: exit %d, stdout %q", code, out)
	}
	if !strings.Contains(stderr, "catalog-rebuild") || !strings.Contains(stderr, "1 backup record") {
		t.Errorf("backup-list with a lost catalog says %q; want it to point to catalog-rebuild", stderr)
	}
}

// TestRepoCheckReportsUnreferencedPacks: a pack nothing references is
// reported with its bytes (without failing the check); repo-gc keeps it
// during the grace period and deletes it after.
func TestRepoCheckReportsUnreferencedPacks(t *testing.T) {
	home, _, _, _ := seeded(t)
	packs := filesUnder(t, filepath.Join(repoDir(home), "packs"))
	src := filepath.Join(repoDir(home), "packs", packs[0])
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	orphan := "00" + strings.Repeat("ab", 31) // a stray copy, as a crashed repack leaves
	os.MkdirAll(filepath.Join(repoDir(home), "packs", "00"), 0o700)
	if err := os.WriteFile(filepath.Join(repoDir(home), "packs", "00", orphan), data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := run(t, home, "repo-check")
	if code != 0 || !strings.Contains(stderr, "1 pack(s), "+fmt.Sprint(len(data))+" bytes, are referenced by nothing") {
		t.Fatalf("repo-check with an unreferenced pack: exit %d, stderr %q", code, stderr)
	}
	var gc []GCReport
	runJSON(t, home, &gc, "repo-gc")
	if gc[0].OrphansDeleted != 0 || gc[0].OrphansYoung != 1 {
		t.Fatalf("repo-gc within the grace period: %+v", gc[0])
	}
	runJSON(t, home, &gc, "repo-gc", "--grace", "0")
	if gc[0].OrphansDeleted != 1 {
		t.Fatalf("repo-gc --grace 0: %+v", gc[0])
	}
	var reps []CheckReport
	runJSON(t, home, &reps, "repo-check")
	if reps[0].UnreferencedPacks != 0 {
		t.Fatalf("after repo-gc: %+v", reps[0])
	}
}

// TestCancelledBackupLeavesNoPacks: a backup cancelled half-way (Ctrl-C)
// removes the packs it wrote; deleting its error record is then enough.
func TestCancelledBackupLeavesNoPacks(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(home, "v.img")
	randomFile(t, img, 8*mib, 501)
	manage(t, home, "v", img)
	backupCreate(t, home, "v")
	before := dirSize(t, filepath.Join(repoDir(home), "packs"))
	randomFile(t, img, 384*mib, 502)
	cmd := start(t, home, "-q", "backup-create", "--name", "cancelled", "v")
	time.Sleep(800 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err == nil {
		t.Skip("the backup finished before it was cancelled")
	}
	if got := dirSize(t, filepath.Join(repoDir(home), "packs")); got != before {
		t.Fatalf("the cancelled backup left %d bytes of packs", got-before)
	}
	repoCheck(t, home)
}

// TestDamageRepairThroughBinary: a chunk corrupted in its pack is found by
// a restore, the backup shows damaged, repo-check fails pointing to
// repo-repair, the next backup stores the chunk again instead of
// deduplicating against it, which heals the old backup (repo-repair finds
// nothing to do); it restores and the repository checks clean.
func TestDamageRepairThroughBinary(t *testing.T) {
	home, img, _, b := seeded(t)
	want := sha256File(t, img)
	packsDir := filepath.Join(repoDir(home), "packs")
	p := filepath.Join(packsDir, filesUnder(t, packsDir)[0])
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	f.ReadAt(buf, 1000) // inside the first chunk's payload (random data is stored raw)
	for i := range buf {
		buf[i] ^= 0xff
	}
	f.WriteAt(buf, 1000)
	f.Close()

	_, stderr, code := run(t, home, "backup-restore", "--name", "r", b.ID)
	assertRefused(t, "restore of a corrupted backup", stderr, code, b.ID, "repo-repair")
	var shown struct {
		Damaged      bool    `json:"damaged"`
		DamageReason *string `json:"damage_reason"`
	}
	runJSON(t, home, &shown, "backup-show", b.ID)
	if !shown.Damaged || shown.DamageReason == nil {
		t.Fatalf("backup-show after a corrupt chunk was found: %+v", shown)
	}
	if _, stderr, code := run(t, home, "repo-check"); code == 0 || !strings.Contains(stderr, "repo-repair") {
		t.Fatalf("repo-check with a lost chunk: exit %d, %s", code, stderr)
	}
	b2 := backupCreate(t, home, "v")
	if b2.StoredBytes == 0 {
		t.Fatal("the next backup deduplicated against the lost chunk")
	}
	// That backup healed the old one (issue 11); repo-repair agrees.
	runJSON(t, home, &shown, "backup-show", b.ID)
	if shown.Damaged {
		t.Fatalf("backup-show after the next backup stored the chunk again: %+v", shown)
	}
	var reps []struct {
		Healed  []string `json:"healed"`
		Damaged []string `json:"damaged"`
	}
	runJSON(t, home, &reps, "repo-repair", "--read-data")
	if len(reps) != 1 || len(reps[0].Healed) != 0 || len(reps[0].Damaged) != 0 {
		t.Fatalf("repo-repair: %+v, want nothing damaged", reps)
	}
	for _, id := range []string{b.ID, b2.ID} {
		r := restoreNew(t, home, id, "r-"+id[:8])
		if sha256File(t, r.Path) != want {
			t.Fatalf("backup %s does not restore after the repair", id)
		}
	}
	repoCheck(t, home)
}
