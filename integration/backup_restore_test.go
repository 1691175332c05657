package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBackupRestoreExt4 backs up an ext4 image holding files, restores it
// into a new volume and checks the image bytes and every file inside it.
func TestBackupRestoreExt4(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(t.TempDir(), "fs.img")
	files := map[string][]byte{
		"random.bin":          randomBytes(1, 5*mib),
		"dir/sub/notes.txt":   []byte(strings.Repeat("volback keeps blocks\n", 4000)),
		"dir/empty":           {},
		"dir/sub/small.bin":   randomBytes(2, 3*kib+7),
		"big/zeros-then-data": append(make([]byte, 2*mib), randomBytes(3, 100*kib)...),
	}
	sums := ext4Image(t, img, 256*mib, files)
	want := sha256File(t, img)

	v := manage(t, home, "fs", img)
	if v.SizeBytes != 256*mib || v.Size != 1 {
		t.Errorf("manage: size %d GiB, size_bytes %d; want 1 GiB, %d", v.Size, v.SizeBytes, 256*mib)
	}
	b := backupCreate(t, home, "fs")
	if b.SizeBytes != 256*mib || b.Size != 1 || b.VolumeID != v.ID {
		t.Errorf("backup: size %d GiB, size_bytes %d, volume_id %q; want 1, %d, %q", b.Size, b.SizeBytes, b.VolumeID, 256*mib, v.ID)
	}

	r := restoreNew(t, home, b.ID, "r")
	if got := sha256File(t, r.Path); got != want {
		t.Fatalf("restored image sha256 %s, want %s", got, want)
	}
	if r.SizeBytes != 256*mib {
		t.Errorf("restored volume size_bytes %d, want %d", r.SizeBytes, 256*mib)
	}

	mnt := loopMount(t, r.Path, true)
	for name, sum := range sums {
		if got := sha256File(t, filepath.Join(mnt, name)); got != sum {
			t.Errorf("restored file %s sha256 %s, want %s", name, got, sum)
		}
	}
	unmount(t, mnt)
}

// TestSecondBackupDedups checks that backing up an unchanged volume again
// stores next to nothing new.
func TestSecondBackupDedups(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(t.TempDir(), "v.img")
	randomFile(t, img, 32*mib, 10)
	manage(t, home, "v", img)

	before := dirSize(t, repoDir(home))
	b1 := backupCreate(t, home, "v")
	first := dirSize(t, repoDir(home)) - before
	if first < 32*mib {
		t.Fatalf("first backup grew the repository by %d bytes, want at least the %d random bytes", first, 32*mib)
	}
	b2 := backupCreate(t, home, "v")
	second := dirSize(t, repoDir(home)) - before - first
	t.Logf("first backup +%d bytes, second +%d bytes", first, second)
	if limit := first/100 + mib; second > limit {
		t.Errorf("second backup of an unchanged volume grew the repository by %d bytes, want < %d", second, limit)
	}
	if b1.ID == b2.ID {
		t.Errorf("both backups have id %s", b1.ID)
	}
	r := restoreNew(t, home, b2.ID, "r2")
	compareFiles(t, img, r.Path, 32*mib)
}

// TestCreateFromBackup covers create --backup-id with size 0 (the backup's
// size), a larger size (rest reads as zeros) and a smaller one (refused).
func TestCreateFromBackup(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(t.TempDir(), "v.img")
	randomFile(t, img, 8*mib, 20)
	manage(t, home, "v", img)
	b := backupCreate(t, home, "v")

	var same Volume
	runJSON(t, home, &same, "create", "--name", "same", "--backup-id", b.ID, "0")
	if same.SizeBytes != 8*mib {
		t.Errorf("create --backup-id B 0: size_bytes %d, want the backup's %d", same.SizeBytes, 8*mib)
	}
	if fileSize(t, same.Path) != 8*mib {
		t.Errorf("create --backup-id B 0: file is %d bytes, want %d", fileSize(t, same.Path), 8*mib)
	}
	compareFiles(t, img, same.Path, 8*mib)

	var big Volume
	runJSON(t, home, &big, "create", "--name", "big", "--backup-id", b.ID, "16M")
	if big.SizeBytes != 16*mib || fileSize(t, big.Path) != 16*mib {
		t.Errorf("create --backup-id B 16M: size_bytes %d, file %d bytes; want %d", big.SizeBytes, fileSize(t, big.Path), 16*mib)
	}
	compareFiles(t, img, big.Path, 8*mib)
	zeros := filepath.Join(t.TempDir(), "zeros")
	makeSparse(t, zeros, 16*mib)
	a, _ := os.Open(zeros)
	defer a.Close()
	c, _ := os.Open(big.Path)
	defer c.Close()
	compareRange(t, a, c, 8*mib, 16*mib)

	var empty Volume
	runJSON(t, home, &empty, "create", "--name", "empty", "1G")
	if empty.SizeBytes != gib || fileSize(t, empty.Path) != gib {
		t.Errorf("create 1G: size_bytes %d, file %d bytes; want %d", empty.SizeBytes, fileSize(t, empty.Path), gib)
	}
	if a := allocated(t, empty.Path); a > mib {
		t.Errorf("create 1G: new image allocates %d bytes, want a sparse file", a)
	}

	// delete removes the image only when volback created it.
	mustRun(t, home, "delete", empty.ID)
	if _, err := os.Stat(empty.Path); !os.IsNotExist(err) {
		t.Errorf("delete of a created volume left its file %s (stat: %v)", empty.Path, err)
	}
	mustRun(t, home, "delete", "v")
	if _, err := os.Stat(img); err != nil {
		t.Errorf("delete of a managed volume removed its source %s: %v", img, err)
	}

	before := state(t, home)
	_, stderr, code := run(t, home, "create", "--name", "small", "--backup-id", b.ID, "4M")
	assertRefused(t, "create smaller than the backup", stderr, code, "size")
	if after := state(t, home); after != before {
		t.Errorf("refused create changed the catalog:\nbefore %s\nafter %s", before, after)
	}
}

// TestJSONShapes checks every documented field and its JSON type, lists as
// arrays, and the table form.
func TestJSONShapes(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(t.TempDir(), "v.img")
	makeSparse(t, img, 256*mib)
	writeRandom(t, img, 0, mib, 30)
	v := manage(t, home, "shape", img)
	b := backupCreate(t, home, "shape")

	str, num, boolean := "string", "number", "bool"
	optStr := "string|null"
	backupFields := map[string]string{
		"id": str, "name": optStr, "description": optStr, "status": str,
		"volume_id": str, "volume_name": optStr, "size": num, "size_bytes": num,
		"object_count": num, "stored_bytes": num, "availability_zone": str,
		"container": str, "created_at": str, "updated_at": optStr,
		"is_incremental": boolean, "has_dependent_backups": boolean,
		"parent_id": optStr, "snapshot_id": optStr, "data_timestamp": optStr,
		"fail_reason": optStr, "project_id": str,
	}
	volumeFields := map[string]string{
		"id": str, "name": str, "status": str, "size": num, "size_bytes": num,
		"source": str, "path": str, "driver": str, "availability_zone": str,
		"project_id": str, "created_at": str, "updated_at": optStr,
	}

	var bo map[string]any
	runJSON(t, home, &bo, "backup-show", b.ID)
	checkFields(t, "backup-show", bo, backupFields)
	if bo["size"] != float64(1) || bo["size_bytes"] != float64(256*mib) {
		t.Errorf("backup-show: size %v, size_bytes %v; want 1 (GiB rounded up) and %d", bo["size"], bo["size_bytes"], 256*mib)
	}
	if bo["id"] != b.ID || bo["volume_id"] != v.ID || bo["status"] != "available" {
		t.Errorf("backup-show: id %v volume_id %v status %v", bo["id"], bo["volume_id"], bo["status"])
	}
	checkTime(t, "backup created_at", bo["created_at"])

	var bl []map[string]any
	runJSON(t, home, &bl, "backup-list")
	if len(bl) != 1 {
		t.Fatalf("backup-list: %d backups, want 1", len(bl))
	}
	checkFields(t, "backup-list[0]", bl[0], backupFields)
	var blv []map[string]any
	runJSON(t, home, &blv, "backup-list", "--volume-id", v.ID)
	if len(blv) != 1 || blv[0]["id"] != b.ID {
		t.Errorf("backup-list --volume-id: %v, want just %s", blv, b.ID)
	}

	var vo map[string]any
	runJSON(t, home, &vo, "show", v.ID)
	checkFields(t, "show", vo, volumeFields)
	if vo["size"] != float64(1) || vo["size_bytes"] != float64(256*mib) || vo["name"] != "shape" {
		t.Errorf("show: size %v size_bytes %v name %v", vo["size"], vo["size_bytes"], vo["name"])
	}
	checkTime(t, "volume created_at", vo["created_at"])
	var vl []map[string]any
	runJSON(t, home, &vl, "list")
	if len(vl) != 1 {
		t.Fatalf("list: %d volumes, want 1", len(vl))
	}
	checkFields(t, "list[0]", vl[0], volumeFields)

	// An empty list is still an array, not null.
	fresh := newHome(t)
	for _, verb := range []string{"list", "backup-list"} {
		if out := strings.TrimSpace(mustRun(t, fresh, "-f", "json", verb)); out != "[]" {
			t.Errorf("-f json %s on an empty home printed %q, want []", verb, out)
		}
	}

	for _, args := range [][]string{{"backup-show", b.ID}, {"show", v.ID}} {
		out := mustRun(t, home, args...)
		for _, w := range []string{"Property", "Value", args[1]} {
			if !strings.Contains(out, w) {
				t.Errorf("%s table output lacks %q:\n%s", args[0], w, out)
			}
		}
	}
}

// checkFields checks that obj has each field with the JSON type given
// ("string", "number", "bool", "string|null").
func checkFields(t *testing.T, what string, obj map[string]any, fields map[string]string) {
	t.Helper()
	for name, typ := range fields {
		val, ok := obj[name]
		if !ok {
			t.Errorf("%s: field %q missing", what, name)
			continue
		}
		var got string
		switch val.(type) {
		case string:
			got = "string"
		case float64:
			got = "number"
		case bool:
			got = "bool"
		case nil:
			got = "null"
		default:
			got = "other"
		}
		if !strings.Contains(typ, got) {
			t.Errorf("%s: field %q is %s (%v), want %s", what, name, got, val, typ)
		}
	}
}

func checkTime(t *testing.T, what string, v any) {
	t.Helper()
	s, _ := v.(string)
	if _, err := time.Parse(time.RFC3339, s); err != nil {
		t.Errorf("%s %q is not RFC 3339: %v", what, s, err)
	}
}

// TestBackupDelete deletes one of two backups (the other still restores)
// and then the last one (no pack files remain).
func TestBackupDelete(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(t.TempDir(), "v.img")
	randomFile(t, img, 24*mib, 40)
	manage(t, home, "v", img)
	b1 := backupCreate(t, home, "v")
	writeRandom(t, img, 4*mib, 8*mib, 41) // change a third of the volume
	b2 := backupCreate(t, home, "v")
	want := sha256File(t, img)

	mustRun(t, home, "backup-delete", b1.ID)
	var left []Backup
	runJSON(t, home, &left, "backup-list")
	if len(left) != 1 || left[0].ID != b2.ID {
		t.Fatalf("after deleting %s, backup-list = %+v; want only %s", b1.ID, left, b2.ID)
	}
	if _, err := os.Stat(filepath.Join(repoDir(home), "backups", b1.ID)); !os.IsNotExist(err) {
		t.Errorf("record backups/%s still in the repository after backup-delete (stat: %v)", b1.ID, err)
	}
	r := restoreNew(t, home, b2.ID, "r")
	if got := sha256File(t, r.Path); got != want {
		t.Fatalf("restore of the remaining backup: sha256 %s, want %s", got, want)
	}

	mustRun(t, home, "backup-delete", b2.ID)
	runJSON(t, home, &left, "backup-list")
	if len(left) != 0 {
		t.Errorf("after deleting every backup, backup-list = %+v", left)
	}
	if packs := filesUnder(t, filepath.Join(repoDir(home), "packs")); len(packs) != 0 {
		t.Errorf("after deleting every backup, packs/ still holds %d files: %v", len(packs), packs)
	}
	if recs := filesUnder(t, filepath.Join(repoDir(home), "backups")); len(recs) != 0 {
		t.Errorf("after deleting every backup, backups/ still holds %v", recs)
	}
}
