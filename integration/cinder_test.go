package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The Cinder v3 API driven by Debian's python3-cinderclient and
// python3-openstackclient (make deps) against a real volback serve, each
// command checked against what volback then holds.

// serveHTTP starts volback serve --listen on a free loopback port and
// returns its Cinder endpoint (http://127.0.0.1:PORT/v3).
func serveHTTP(t *testing.T, home string) string {
	t.Helper()
	cmd := exec.Command(bin, "--home", home, "serve", "--listen", "127.0.0.1:0")
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("volback serve did not stop within 20s of SIGTERM")
		}
	})
	addr := make(chan string, 1)
	go func() {
		defer close(done)
		defer cmd.Wait()
		re := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/v3`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		return "http://" + a + "/v3"
	case <-time.After(30 * time.Second):
		t.Fatal("volback serve did not say where it listens within 30s")
	}
	return ""
}

// osClient runs the cinder or openstack command with noauth credentials
// for user:project and returns its stdout; an exit status other than 0
// fails the test unless wantFail.
func osClient(t *testing.T, endpoint, user, project string, wantFail bool, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if name == "openstack" {
		args = append([]string{"--os-auth-type", "noauth", "--os-endpoint", endpoint, "--os-project-id", project, "--os-user-id", user}, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	var env []string
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "OS_") && !strings.HasPrefix(kv, "CINDER") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "OS_AUTH_TYPE=noauth", "CINDER_ENDPOINT="+endpoint, "OS_PROJECT_ID="+project,
		"OS_USER_ID="+user, "OS_VOLUME_API_VERSION=3.51", "HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	t.Logf("%s %s -> %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	if (err != nil) != wantFail {
		t.Fatalf("%s %s: %v (want failure: %v)\nstderr: %s", name, strings.Join(args, " "), err, wantFail, errb.String())
	}
	if wantFail {
		return errb.String()
	}
	return out.String()
}

func cinder(t *testing.T, endpoint string, args ...string) string {
	t.Helper()
	return osClient(t, endpoint, "admin", "admin", false, "cinder", args...)
}

// table parses a client's table: a Property/Value table into one map, a
// list into one map per row, keyed by the header's titles.
func table(out string) []map[string]string {
	var header []string
	var rows []map[string]string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if header == nil {
			header = cells
			continue
		}
		row := map[string]string{}
		for i, c := range cells {
			if i < len(header) {
				row[header[i]] = c
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// props parses a Property/Value table.
func props(out string) map[string]string {
	m := map[string]string{}
	for _, r := range table(out) {
		m[r["Property"]] = r["Value"]
	}
	return m
}

// backupOf is what volback holds of a backup (through its socket).
type heldBackup struct {
	Backup
	ParentID    *string `json:"parent_id"`
	SnapshotID  *string `json:"snapshot_id"`
	Consistency *string `json:"consistency"`
}

func held(t *testing.T, home, id string) heldBackup {
	t.Helper()
	var b heldBackup
	runJSON(t, home, &b, "backup-show", id)
	return b
}

// settle waits until volback holds backup id in a final status.
func settle(t *testing.T, home, id string) heldBackup {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b := held(t, home, id)
		if b.Status != "creating" && b.Status != "restoring" && b.Status != "deleting" {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("backup %s still %s after 2 min", id, b.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// settleVolume waits until volume id is no longer being made or restored.
func settleVolume(t *testing.T, home, id string) Volume {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		v := showVolume(t, home, id)
		if v.Status != "creating" && v.Status != "restoring-backup" {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume %s still %s after 2 min", id, v.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func fileHead(t *testing.T, path string, n int64) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < n {
		t.Fatalf("%s: %d bytes, want at least %d", path, len(b), n)
	}
	return b[:n]
}

// TestCinderClient drives volback serve with the real cinder and
// openstack commands (noauth, as in the issue) and checks each against
// what volback then holds: states, ids, quotas, and restored bytes.
func TestCinderClient(t *testing.T) {
	requireTool(t, "cinder")
	requireTool(t, "openstack")
	home := newHome(t)
	const size = 24 * mib
	db := filepath.Join(home, "db.img")
	randomFile(t, db, size, 71)
	busy := filepath.Join(home, "busy.img")
	randomFile(t, busy, 8*mib, 72)
	dbVol := manage(t, home, "db", db)
	busyVol := manage(t, home, "busy", busy)
	ep := serveHTTP(t, home)

	// cinder list: volback's volumes.
	rows := table(cinder(t, ep, "list"))
	seen := map[string]string{}
	for _, r := range rows {
		seen[r["ID"]] = r["Name"] + "/" + r["Status"]
	}
	if seen[dbVol.ID] != "db/available" || seen[busyVol.ID] != "busy/available" || len(rows) != 2 {
		t.Fatalf("cinder list: %v", rows)
	}

	// backup-create --name: answered at once (creating), then available.
	full := props(cinder(t, ep, "backup-create", "--name", "full", "db"))
	if full["name"] != "full" || full["volume_id"] != dbVol.ID || full["id"] == "" {
		t.Fatalf("backup-create: %v", full)
	}
	fullB := settle(t, home, full["id"])
	if fullB.Status != "available" || fullB.VolumeID != dbVol.ID || fullB.Name != "full" {
		t.Fatalf("volback holds %+v", fullB)
	}
	fullBytes := fileHead(t, db, size)

	// backup-create --incremental after a change.
	writeRandom(t, db, 5*mib, 256*kib, 73)
	incBytes := fileHead(t, db, size)
	inc := props(cinder(t, ep, "backup-create", "--incremental", "--name", "inc", "db"))
	incB := settle(t, home, inc["id"])
	if incB.Status != "available" || !incB.IsIncremental || incB.ParentID == nil || *incB.ParentID != fullB.ID {
		t.Fatalf("incremental: %+v", incB)
	}
	if incB.StoredBytes >= fullB.StoredBytes/4 {
		t.Errorf("the incremental stored %d bytes, the full %d: not incremental", incB.StoredBytes, fullB.StoredBytes)
	}

	// A volume in use: refused without --force, nothing made; through a
	// snapshot with it.
	f, err := os.OpenFile(busy, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	var before []Backup
	runJSON(t, home, &before, "backup-list")
	msg := osClient(t, ep, "admin", "admin", true, "cinder", "backup-create", "busy")
	if !strings.Contains(msg, "force flag") || !strings.Contains(msg, "HTTP 400") {
		t.Errorf("in-use backup without --force: %s", msg)
	}
	var after []Backup
	runJSON(t, home, &after, "backup-list")
	if len(after) != len(before) {
		t.Errorf("the refused backup left a record: %v", after)
	}
	forced := props(cinder(t, ep, "backup-create", "--force", "--name", "forced", "busy"))
	forcedB := settle(t, home, forced["id"])
	if forcedB.Status != "available" || forcedB.Consistency == nil || *forcedB.Consistency != "crash-consistent" {
		t.Errorf("forced backup: %+v consistency %v", forcedB, forcedB.Consistency)
	}
	f.Close()

	// A snapshot, listed; backup-create --snapshot-id.
	snap := props(cinder(t, ep, "snapshot-create", "--name", "s1", "db"))
	snaps := table(cinder(t, ep, "snapshot-list"))
	if len(snaps) != 1 || snaps[0]["ID"] != snap["id"] || snaps[0]["Status"] != "available" || snaps[0]["Volume ID"] != dbVol.ID {
		t.Fatalf("snapshot-list: %v", snaps)
	}
	fromSnap := props(cinder(t, ep, "backup-create", "--snapshot-id", snap["id"], "--name", "fromsnap", "db"))
	fromSnapB := settle(t, home, fromSnap["id"])
	if fromSnapB.Status != "available" || fromSnapB.SnapshotID == nil || *fromSnapB.SnapshotID != snap["id"] {
		t.Errorf("backup of snapshot %s: %+v", snap["id"], fromSnapB)
	}

	// backup-list and backup-show agree with volback.
	var all []Backup
	runJSON(t, home, &all, "backup-list")
	list := table(cinder(t, ep, "backup-list"))
	if len(list) != len(all) {
		t.Fatalf("cinder backup-list has %d rows, volback %d", len(list), len(all))
	}
	for _, r := range list {
		b := held(t, home, r["ID"])
		if r["Status"] != b.Status || r["Name"] != b.Name || r["Volume ID"] != b.VolumeID || r["Object Count"] != fmt.Sprint(b.ObjectCount) {
			t.Errorf("backup-list row %v, volback holds %+v", r, b)
		}
	}
	show := props(cinder(t, ep, "backup-show", "full"))
	if show["id"] != fullB.ID || show["status"] != "available" || show["size"] != fmt.Sprint(fullB.Size) || show["is_incremental"] != "False" ||
		show["has_dependent_backups"] != "True" {
		t.Errorf("backup-show full: %v", show)
	}

	// backup-restore to a new volume: the full backup's bytes.
	r1 := props(cinder(t, ep, "backup-restore", "full"))
	if r1["backup_id"] != fullB.ID || r1["volume_id"] == "" {
		t.Fatalf("backup-restore: %v", r1)
	}
	v1 := settleVolume(t, home, r1["volume_id"])
	if v1.Status != "available" || !bytes.Equal(fileHead(t, v1.Path, size), fullBytes) {
		t.Fatalf("restored volume %s is %s, or its bytes are not the full backup's", v1.ID, v1.Status)
	}
	// cinder create --backup-id: a new volume with the incremental's bytes.
	c := props(cinder(t, ep, "create", "--backup-id", inc["id"], "--name", "fromcreate"))
	vc := settleVolume(t, home, c["id"])
	if vc.Status != "available" || vc.Name != "fromcreate" || !bytes.Equal(fileHead(t, vc.Path, size), incBytes) {
		t.Fatalf("create --backup-id: volume %s is %s, or its bytes are not the incremental's", vc.ID, vc.Status)
	}
	// backup-restore --volume: over that volume, back to the full backup.
	r2 := props(cinder(t, ep, "backup-restore", "--volume", "fromcreate", "full"))
	if r2["volume_id"] != vc.ID {
		t.Fatalf("backup-restore --volume: %v", r2)
	}
	settle(t, home, fullB.ID)
	if v := settleVolume(t, home, vc.ID); v.Status != "available" || !bytes.Equal(fileHead(t, v.Path, size), fullBytes) {
		t.Fatalf("restore over volume %s: %s, or its bytes are not the full backup's", v.ID, v.Status)
	}

	// backup-export, then backup-import into a second home on the same
	// repository (its own serve): the backup is there, and restores.
	rec := props(cinder(t, ep, "backup-export", inc["id"]))
	if rec["backup_service"] != "volback.drivers.posix" || rec["backup_url"] == "" {
		t.Fatalf("backup-export: %v", rec)
	}
	recFull := props(cinder(t, ep, "backup-export", fullB.ID))
	other := newHome(t)
	if err := os.WriteFile(filepath.Join(other, "volback.toml"), []byte(fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\n", repoDir(home))), 0o600); err != nil {
		t.Fatal(err)
	}
	ep2 := serveHTTP(t, other)
	imp := props(cinder(t, ep2, "backup-import", recFull["backup_service"], recFull["backup_url"]))
	imp2 := props(cinder(t, ep2, "backup-import", rec["backup_service"], rec["backup_url"]))
	if imp["id"] != fullB.ID || imp2["id"] != incB.ID {
		t.Fatalf("backup-import: %v %v", imp, imp2)
	}
	if b := held(t, other, incB.ID); b.Status != "available" || !b.IsIncremental {
		t.Fatalf("the second home holds %+v", b)
	}
	r3 := props(cinder(t, ep2, "backup-restore", incB.ID))
	if v := settleVolume(t, other, r3["volume_id"]); v.Status != "available" || !bytes.Equal(fileHead(t, v.Path, size), incBytes) {
		t.Fatalf("restore of the imported backup: %s, or its bytes differ", v.Status)
	}

	// Quotas.
	q := props(cinder(t, ep, "quota-show", "admin"))
	if q["backups"] != "10" || q["backup_gigabytes"] != "1000" {
		t.Errorf("quota-show: %v", q)
	}
	up := props(cinder(t, ep, "quota-update", "--backups", "40", "--backup-gigabytes", "200", "admin"))
	var qv struct {
		Backups         int64 `json:"backups"`
		BackupGigabytes int64 `json:"backup_gigabytes"`
	}
	runJSON(t, home, &qv, "quota-show", "admin")
	if up["backups"] != "40" || qv.Backups != 40 || qv.BackupGigabytes != 200 {
		t.Errorf("quota-update printed %v; volback holds %+v", up, qv)
	}
	usage := map[string]map[string]string{}
	for _, r := range table(cinder(t, ep, "quota-usage", "admin")) {
		usage[r["Type"]] = r
	}
	runJSON(t, home, &all, "backup-list")
	if u := usage["backups"]; u["In_use"] != fmt.Sprint(len(all)) || u["Limit"] != "40" || u["Reserved"] != "0" {
		t.Errorf("quota-usage: %v, volback holds %d backups", usage, len(all))
	}

	// service-list: the zone's backup service is up.
	svcs := map[string]map[string]string{}
	for _, r := range table(cinder(t, ep, "service-list")) {
		svcs[r["Binary"]] = r
	}
	if s := svcs["volback-backup"]; s["Zone"] != "nova" || s["State"] != "up" || s["Status"] != "enabled" {
		t.Errorf("service-list: %v", svcs)
	}

	// openstack volume backup set --state error, then delete --force.
	osClient(t, ep, "admin", "admin", false, "openstack", "volume", "backup", "set", "--state", "error", fromSnapB.ID)
	if b := held(t, home, fromSnapB.ID); b.Status != "error" {
		t.Errorf("after openstack volume backup set --state error: %s", b.Status)
	}
	osClient(t, ep, "admin", "admin", false, "openstack", "volume", "backup", "delete", "--force", fromSnapB.ID)
	if _, stderr, code := run(t, home, "backup-show", fromSnapB.ID); code == 0 || !strings.Contains(stderr, "not found") {
		t.Errorf("after openstack volume backup delete --force the backup still shows: %s", stderr)
	}

	// A member of another project sees none of it and cannot touch it.
	if rows := table(osClient(t, ep, "bob", "p2", false, "cinder", "backup-list")); len(rows) != 0 {
		t.Errorf("p2's backup-list: %v", rows)
	}
	osClient(t, ep, "bob", "p2", true, "cinder", "backup-show", fullB.ID)
	osClient(t, ep, "bob", "p2", true, "cinder", "backup-delete", incB.ID)
	if b := held(t, home, incB.ID); b.Status != "available" {
		t.Errorf("p2's attempt left the backup %s", b.Status)
	}

	// backup-delete, children first.
	cinder(t, ep, "backup-delete", "inc")
	if _, _, code := run(t, home, "backup-show", incB.ID); code == 0 {
		t.Error("cinder backup-delete left the backup")
	}
	cinder(t, ep, "backup-delete", fullB.ID, forcedB.ID)
	runJSON(t, home, &all, "backup-list")
	if len(all) != 0 {
		t.Errorf("backups left after deleting them all: %v", all)
	}
}
