package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Encrypted repositories through the binary (issue 11): a round trip with
// incrementals, a mount, export, a lost catalog and imports; refusals of a
// missing or wrong passphrase that change nothing; nothing readable in the
// repository; keys added and changed without rewriting data; damage found
// by range, other backups unaffected, healed by the next backup.

const (
	plainMarker = "VOLBACK-PLAINTEXT-MARKER-5b1e"
	volumeName  = "volname-xyzzy-secret"
	backupName  = "bkname-qwerty-secret"
)

// pwFile writes a passphrase file (with the newline echo leaves).
func pwFile(t *testing.T, pw string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// markedImage is a random image with the marker written into it in
// several places (compressible runs and lone copies).
func markedImage(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	randomFile(t, path, size, seed)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, 100 * kib, size / 2} {
		if _, err := f.WriteAt([]byte(strings.Repeat(plainMarker, 300)), off); err != nil {
			t.Fatal(err)
		}
	}
}

// repoShows returns the repository files whose name or bytes contain s.
func repoShows(t *testing.T, dir string, s string) []string {
	t.Helper()
	var hits []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(s)) || strings.Contains(p, s) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}

type repoView struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Encryption  string `json:"encryption"`
	State       string `json:"state"`
	ZoneDefault bool   `json:"zone_default"`
}

type keyView struct {
	ID      string `json:"id"`
	Current bool   `json:"current"`
}

type verifyView struct {
	BackupID      string `json:"backup_id"`
	Damaged       bool   `json:"damaged"`
	ChunksRead    int    `json:"chunks_read"`
	DamagedRanges []struct {
		Offset int64 `json:"offset"`
		Length int64 `json:"length"`
	} `json:"damaged_ranges"`
}

func TestEncryptedRoundTrip(t *testing.T) {
	home := newHome(t)
	pw := pwFile(t, "correct horse battery staple")
	dir := filepath.Join(t.TempDir(), "vault")
	var rv repoView
	runJSON(t, home, &rv, "--password-file", pw, "repo-init", "--name", "vault", "file://"+dir)
	if rv.Encryption != "aes-256-gcm" || rv.State != "unlocked" || !rv.ZoneDefault || rv.Name != "vault" {
		t.Fatalf("repo-init printed %+v", rv)
	}
	img := filepath.Join(t.TempDir(), "vol.img")
	markedImage(t, img, 5*mib+4096, 11)
	manage(t, home, volumeName, img)

	// Without the passphrase, or with a wrong one: refused, nothing changes.
	before := state(t, home)
	_, stderr, code := run(t, home, "backup-create", "--container", "vault", volumeName)
	assertRefused(t, "backup-create without a passphrase", stderr, code, "passphrase", "--password-file")
	_, stderr, code = run(t, home, "--password-file", pwFile(t, "wrong"), "backup-create", volumeName)
	assertRefused(t, "backup-create with a wrong passphrase", stderr, code, "wrong passphrase")
	if after := state(t, home); after != before {
		t.Fatalf("a refused backup changed the catalog:\n%s\n---\n%s", before, after)
	}
	if n := len(filesUnder(t, filepath.Join(dir, "packs"))); n != 0 {
		t.Fatalf("a refused backup wrote %d pack(s)", n)
	}

	var ids, sums []string
	var exports []exported
	for i := range 3 {
		args := []string{"--password-file", pw, "backup-create", "--container", "vault", "--name", backupName}
		if i > 0 {
			writeRandom(t, img, int64(i)*mib+5*kib, 100*kib, uint64(20+i))
			args = append(args, "--incremental")
		}
		var b struct {
			Backup
			Container string `json:"container"`
		}
		runJSON(t, home, &b, append(args, volumeName)...)
		if b.Status != "available" || b.Container != "vault" || b.IsIncremental != (i > 0) {
			t.Fatalf("backup %d: %+v", i, b)
		}
		var e exported
		runJSON(t, home, &e, "--password-file", pw, "backup-export", b.ID)
		ids, sums, exports = append(ids, b.ID), append(sums, sha256File(t, img)), append(exports, e)
	}

	// Nothing in the repository shows the data, the volume's name or the
	// passphrase.
	for _, s := range []string{plainMarker, volumeName, backupName, "correct horse"} {
		if hits := repoShows(t, dir, s); len(hits) > 0 {
			t.Fatalf("the repository shows %q in %v", s, hits)
		}
	}
	// The backup_url holds the record, never a key or the passphrase.
	for _, e := range exports {
		raw, _ := base64.StdEncoding.DecodeString(e.BackupURL)
		if bytes.Contains(raw, []byte("correct horse")) || bytes.Contains(raw, []byte(`"key`)) || bytes.Contains(raw, []byte("wrapped")) {
			t.Fatalf("backup_url holds key material: %s", raw)
		}
	}

	// Restore without the passphrase: refused, nothing created.
	before = state(t, home)
	_, stderr, code = run(t, home, "backup-restore", "--name", "nope", ids[2])
	assertRefused(t, "restore without a passphrase", stderr, code, "passphrase")
	if after := state(t, home); after != before {
		t.Fatal("a refused restore changed the catalog")
	}
	_, stderr, code = run(t, home, "backup-delete", ids[2])
	assertRefused(t, "delete without a passphrase", stderr, code, "passphrase")
	if after := state(t, home); after != before {
		t.Fatal("a refused delete changed the catalog")
	}
	// With it (VOLBACK_PASSWORD this time): byte-exact.
	v := restoreNewEnv(t, home, ids[2], "back", "VOLBACK_PASSWORD=correct horse battery staple")
	if got := sha256File(t, v.Path); got != sums[2] {
		t.Fatal("restored incremental differs")
	}

	// The mount reads every backup, decrypted and verified.
	m := startMount(t, home, "--password-file", pw)
	for i, id := range ids {
		if got := sha256File(t, filepath.Join(m.dir, "by-id", id+".img")); got != sums[i] {
			t.Fatalf("mounted backup %d differs", i)
		}
	}
	mustRun(t, home, "umount", m.dir)
	m.waitExit(t, "umount")

	// Lose the catalog; register the repository again and import.
	if err := os.RemoveAll(filepath.Join(home, "catalog")); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = run(t, home, "--password-file", pwFile(t, "wrong"), "repo-init", "--name", "vault", "file://"+dir)
	assertRefused(t, "re-registering with a wrong passphrase", stderr, code, "wrong passphrase")
	runJSON(t, home, &rv, "--password-file", pw, "repo-init", "--name", "vault", "file://"+dir)
	if rv.Encryption != "aes-256-gcm" || rv.State != "unlocked" {
		t.Fatalf("re-registered repository: %+v", rv)
	}
	for _, i := range []int{2, 0, 1} { // any order
		mustRun(t, home, "--password-file", pw, "backup-import", exports[i].BackupService, exports[i].BackupURL)
	}
	for i, id := range ids {
		v := restoreNewEnv(t, home, id, "again"+id[:4], "VOLBACK_PASSWORD=correct horse battery staple")
		if got := sha256File(t, v.Path); got != sums[i] {
			t.Fatalf("backup %d restored after import differs", i)
		}
	}
	// A full read of every chunk finds nothing wrong.
	mustRun(t, home, "--password-file", pw, "repo-check", "--read-data")
}

// runJSONEnv is runJSON with extra environment variables.
func runJSONEnv(t *testing.T, home string, env []string, v any, args ...string) {
	t.Helper()
	out, stderr, code := runEnv(t, home, env, append([]string{"-f", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("volback %s: exit %d\nstderr: %s", strings.Join(args, " "), code, stderr)
	}
	if err := jsonDecode(out, v); err != nil {
		t.Fatalf("volback -f json %s: %v\nstdout: %s", strings.Join(args, " "), err, out)
	}
}

func jsonDecode(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// backupCreateEnv is backupCreate with extra environment variables.
func backupCreateEnv(t *testing.T, home, volume string, env ...string) Backup {
	t.Helper()
	var b Backup
	runJSONEnv(t, home, env, &b, "backup-create", volume)
	if b.Status != "available" {
		t.Fatalf("backup-create %s: %+v", volume, b)
	}
	return b
}

// restoreNewEnv is restoreNew with extra environment (the passphrase).
func restoreNewEnv(t *testing.T, home, backup, name string, env ...string) Volume {
	t.Helper()
	var r Restore
	runJSONEnv(t, home, env, &r, "backup-restore", "--name", name, backup)
	return showVolume(t, home, r.VolumeID)
}

func TestEncryptedKeys(t *testing.T) {
	home := newHome(t)
	one, two, three := pwFile(t, "one"), pwFile(t, "two"), pwFile(t, "three")
	dir := filepath.Join(t.TempDir(), "r")
	mustRun(t, home, "--password-file", one, "repo-init", "--encryption", "chacha20-poly1305", "file://"+dir)
	img := filepath.Join(t.TempDir(), "vol.img")
	randomFile(t, img, 2*mib, 3)
	manage(t, home, "v", img)
	var b Backup
	runJSON(t, home, &b, "--password-file", one, "backup-create", "v")
	packs := filesUnder(t, filepath.Join(dir, "packs"))

	var keys []keyView
	runJSON(t, home, &keys, "--password-file", one, "repo-key", "add", "--new-password-file", two)
	runJSON(t, home, &keys, "--password-file", one, "repo-key", "list")
	if len(keys) != 2 {
		t.Fatalf("keys after add: %+v", keys)
	}
	var first string
	for _, k := range keys {
		if k.Current {
			first = k.ID
		}
	}
	// A fresh owner (the catalog's owner exits after each verb) unlocked
	// with the second passphrase changes it, then removes the first key.
	mustRun(t, home, "--password-file", two, "repo-key", "passwd", "--new-password-file", three)
	_, stderr, code := run(t, home, "--password-file", three, "repo-key", "remove", "nope")
	assertRefused(t, "removing a key that does not exist", stderr, code, "no key")
	mustRun(t, home, "--password-file", three, "repo-key", "remove", first)
	runJSON(t, home, &keys, "--password-file", three, "repo-key", "list")
	if len(keys) != 1 || !keys[0].Current {
		t.Fatalf("keys at the end: %+v", keys)
	}
	_, stderr, code = run(t, home, "--password-file", three, "repo-key", "remove", keys[0].ID)
	assertRefused(t, "removing the last key", stderr, code, "last key")
	for _, old := range []string{one, two} {
		_, stderr, code = run(t, home, "--password-file", old, "backup-restore", "--name", "x", b.ID)
		assertRefused(t, "restore with a removed passphrase", stderr, code, "wrong passphrase")
	}
	var r Restore
	runJSON(t, home, &r, "--password-file", three, "backup-restore", "--name", "x", b.ID)
	compareFiles(t, img, showVolume(t, home, r.VolumeID).Path, 2*mib)
	// No data was rewritten.
	if after := filesUnder(t, filepath.Join(dir, "packs")); strings.Join(after, ",") != strings.Join(packs, ",") {
		t.Fatalf("packs changed: %v -> %v", packs, after)
	}
}

func TestEncryptedDamageHeals(t *testing.T) {
	home := newHome(t)
	pw := pwFile(t, "pw")
	dir := filepath.Join(t.TempDir(), "r")
	mustRun(t, home, "--password-file", pw, "repo-init", "file://"+dir)
	imgA, imgB := filepath.Join(t.TempDir(), "a.img"), filepath.Join(t.TempDir(), "b.img")
	randomFile(t, imgA, 3*mib, 41)
	randomFile(t, imgB, 1*mib, 42)
	manage(t, home, "a", imgA)
	manage(t, home, "b", imgB)
	var bb Backup
	runJSON(t, home, &bb, "--password-file", pw, "backup-create", "b")
	packsB := map[string]bool{}
	for _, p := range filesUnder(t, filepath.Join(dir, "packs")) {
		packsB[p] = true
	}
	var ba Backup
	runJSON(t, home, &ba, "--password-file", pw, "backup-create", "a")
	var packA string
	for _, p := range filesUnder(t, filepath.Join(dir, "packs")) {
		if !packsB[p] {
			packA = p
		}
	}
	// Flip one byte in the middle of A's pack (inside one sealed blob).
	path := filepath.Join(dir, "packs", packA)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}

	// Without --read-data every chunk exists; with it the damage shows,
	// by range, and the backup is marked.
	mustRun(t, home, "--password-file", pw, "backup-verify", ba.ID)
	out, stderr, code := run(t, home, "-f", "json", "--password-file", pw, "backup-verify", "--read-data", ba.ID)
	if code != 1 || !strings.Contains(stderr, "damaged at bytes") {
		t.Fatalf("verify of the damaged backup: exit %d, stderr %s", code, stderr)
	}
	var reps []verifyView
	if err := jsonDecode(out, &reps); err != nil || len(reps) != 1 || !reps[0].Damaged || len(reps[0].DamagedRanges) != 1 {
		t.Fatalf("verify printed %s (%v)", out, err)
	}
	dr := reps[0].DamagedRanges[0]
	if dr.Offset%(64*kib) != 0 || dr.Length != 64*kib || dr.Offset+dr.Length > 3*mib {
		t.Fatalf("damaged range %+v is not one chunk of the volume", dr)
	}
	var show struct {
		Damaged      bool   `json:"damaged"`
		DamageReason string `json:"damage_reason"`
	}
	runJSON(t, home, &show, "backup-show", ba.ID)
	if !show.Damaged || !strings.Contains(show.DamageReason, "bytes") {
		t.Fatalf("backup-show of the damaged backup: %+v", show)
	}
	// The mount fails reads of exactly that range; the rest reads right.
	m := startMount(t, home, "--password-file", pw)
	f, err := os.Open(filepath.Join(m.dir, "by-id", ba.ID+".img"))
	if err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile(imgA)
	buf := make([]byte, 64*kib)
	for off := int64(0); off < 3*mib; off += 64 * kib {
		_, err := f.ReadAt(buf, off)
		inRange := off >= dr.Offset && off < dr.Offset+dr.Length
		if inRange != (err != nil) {
			t.Fatalf("mounted read at %d: %v (damaged range %+v)", off, err, dr)
		}
		if err == nil && !bytes.Equal(buf, src[off:off+64*kib]) {
			t.Fatalf("mounted read at %d differs", off)
		}
	}
	f.Close()
	mustRun(t, home, "umount", m.dir)
	m.waitExit(t, "umount")
	if !strings.Contains(m.stderr.String(), "damaged") {
		t.Errorf("the mount did not log the damage:\n%s", m.stderr.String())
	}
	// B does not use the chunk: it still verifies and restores.
	mustRun(t, home, "--password-file", pw, "backup-verify", "--read-data", bb.ID)
	var r Restore
	runJSON(t, home, &r, "--password-file", pw, "backup-restore", "--name", "rb", bb.ID)
	compareFiles(t, imgB, showVolume(t, home, r.VolumeID).Path, 1*mib)
	_, stderr, code = run(t, home, "--password-file", pw, "backup-restore", "--name", "ra", ba.ID)
	assertRefused(t, "restore of the damaged backup", stderr, code, "lost")

	// The next backup of the same data stores the chunk again and heals A.
	backupCreateEnv(t, home, "a", "VOLBACK_PASSWORD=pw")
	mustRun(t, home, "--password-file", pw, "backup-verify", "--read-data", ba.ID)
	runJSON(t, home, &show, "backup-show", ba.ID)
	if show.Damaged {
		t.Fatalf("backup still damaged after healing: %+v", show)
	}
	runJSON(t, home, &r, "--password-file", pw, "backup-restore", "--name", "ra2", ba.ID)
	compareFiles(t, imgA, showVolume(t, home, r.VolumeID).Path, 3*mib)
}

func TestScrubSampleResumes(t *testing.T) {
	home := newHome(t)
	pw := pwFile(t, "pw")
	dir := filepath.Join(t.TempDir(), "r")
	mustRun(t, home, "--password-file", pw, "repo-init", "--encryption", "aes-256-gcm", "file://"+dir)
	img := filepath.Join(t.TempDir(), "vol.img")
	randomFile(t, img, 4*mib, 7) // 64 chunks
	manage(t, home, "v", img)
	mustRun(t, home, "--password-file", pw, "backup-create", "v")
	type checkRep struct {
		ChunksRead  int    `json:"chunks_read"`
		ScrubFrom   string `json:"scrub_from"`
		ScrubTo     string `json:"scrub_to"`
		ScrubPasses int    `json:"scrub_passes"`
	}
	var seen []string
	for run := range 4 {
		var reps []checkRep
		runJSON(t, home, &reps, "--password-file", pw, "repo-check", "--sample", "25")
		if len(reps) != 1 || reps[0].ChunksRead != 16 {
			t.Fatalf("run %d: %+v", run, reps)
		}
		if run > 0 && reps[0].ScrubFrom <= seen[len(seen)-1] {
			t.Fatalf("run %d started at %s, not after %s", run, reps[0].ScrubFrom, seen[len(seen)-1])
		}
		seen = append(seen, reps[0].ScrubTo)
		if want := map[bool]int{true: 1, false: 0}[run == 3]; reps[0].ScrubPasses != want {
			t.Fatalf("run %d: passes %d, want %d", run, reps[0].ScrubPasses, want)
		}
	}
}

// TestEncryptedFlippedObjects: a flipped byte in a manifest, a record or a
// pack trailer of an encrypted repository is found (the chunk case is
// TestEncryptedDamageHeals).
func TestEncryptedFlippedObjects(t *testing.T) {
	home := newHome(t)
	pw := pwFile(t, "pw")
	dir := filepath.Join(t.TempDir(), "r")
	mustRun(t, home, "--password-file", pw, "repo-init", "file://"+dir)
	img := filepath.Join(t.TempDir(), "vol.img")
	randomFile(t, img, 1*mib, 5)
	manage(t, home, "v", img)
	var b Backup
	runJSON(t, home, &b, "--password-file", pw, "backup-create", "v")
	flip := func(rel string, at func(n int) int) (restore func()) {
		t.Helper()
		p := filepath.Join(dir, rel)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bad := append([]byte(nil), data...)
		bad[at(len(bad))] ^= 0x80
		if err := os.WriteFile(p, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		return func() { os.WriteFile(p, data, 0o644) }
	}
	middle := func(n int) int { return n / 2 }

	undo := flip(filepath.Join("manifests", b.ID), middle)
	_, stderr, code := run(t, home, "--password-file", pw, "backup-verify", b.ID)
	if code != 1 || !strings.Contains(stderr, "manifest") || !strings.Contains(stderr, "authentication") {
		t.Fatalf("verify with a flipped manifest byte: exit %d: %s", code, stderr)
	}
	undo()

	undo = flip(filepath.Join("backups", b.ID), middle)
	_, stderr, code = run(t, home, "--password-file", pw, "backup-export", b.ID)
	assertRefused(t, "export with a flipped record byte", stderr, code, "record", "corrupt")
	undo()

	packs := filesUnder(t, filepath.Join(dir, "packs"))
	undo = flip(filepath.Join("packs", packs[0]), func(n int) int { return n - 12 - 3 }) // inside the sealed trailer
	var reps []struct {
		Problems []string `json:"problems"`
	}
	runJSON(t, home, &reps, "--password-file", pw, "repo-repair")
	if len(reps) != 1 || !strings.Contains(strings.Join(reps[0].Problems, " "), "trailer") {
		t.Fatalf("repo-repair with a flipped trailer byte: %+v", reps)
	}
	undo()
}
