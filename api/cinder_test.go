package api

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/service"
	"golang.org/x/sys/unix"
)

// TestVersionDiscovery: / lists the v3 API (300, as Cinder) with its
// microversion range, /v3/ the same (200); a request's microversion is
// echoed back, 3.0 when none is asked, the maximum for "latest"; one
// outside 3.0-3.70 is 406 and a malformed one 400.
func TestVersionDiscovery(t *testing.T) {
	e := newEnv(t, "")
	for path, status := range map[string]int{"/": 300, "/v3/": 200, "/v3": 200} {
		r := e.must(status, "GET", path, "", 70, nil)
		v := r.body["versions"].([]any)[0].(map[string]any)
		if v["version"] != "3.70" || v["min_version"] != "3.0" || v["status"] != "CURRENT" || v["id"] != "v3.0" {
			t.Errorf("%s: %v", path, v)
		}
	}
	for _, c := range []struct{ ask, echo string }{{"volume 3.51", "volume 3.51"}, {"", "volume 3.0"},
		{"volume latest", "volume 3.70"}, {"compute 2.1, volume 3.47", "volume 3.47"}} {
		req, _ := http.NewRequest("GET", e.ts.URL+"/v3/backups", nil)
		req.Header.Set("X-Auth-Token", admin)
		if c.ask != "" {
			req.Header.Set(versionHeader, c.ask)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get(versionHeader) != c.echo || res.Header.Get("Vary") != versionHeader {
			t.Errorf("asked %q: %d, echoed %q (Vary %q), want %q", c.ask, res.StatusCode, res.Header.Get(versionHeader), res.Header.Get("Vary"), c.echo)
		}
	}
	e.call("GET", "/v3/backups", admin, 71, nil).fault(t, 406, "notAcceptable", "3.71", "maximum is 3.70")
	req, _ := http.NewRequest("GET", e.ts.URL+"/v3/backups", nil)
	req.Header.Set("X-Auth-Token", admin)
	req.Header.Set(versionHeader, "volume three")
	res, _ := http.DefaultClient.Do(req)
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Errorf("a malformed microversion: %d, want 400", res.StatusCode)
	}
}

// TestNoauth: Cinder's noauth: X-Auth-Token USER:PROJECT; admin:admin is
// the admin, anyone else a member of the project named; no token is 401;
// a URL naming another project than the token's is refused.
func TestNoauth(t *testing.T) {
	e := newEnv(t, "")
	e.call("GET", "/v3/backups", "", 51, nil).fault(t, 401, "unauthorized", "X-Auth-Token", "USER:PROJECT")
	e.call("GET", "/v3/backups", ":p1", 51, nil).fault(t, 401, "unauthorized", "names no user")
	e.call("GET", "/v3/backups", "alice:a/b", 51, nil).fault(t, 401, "unauthorized", "project id")
	e.call("GET", "/v3/p2/backups", alice, 51, nil).fault(t, 400, "badRequest", "project p2 in the URL", "project p1")
	e.must(200, "GET", "/v3/p1/backups", alice, 51, nil)
	// Only the admin may reset a backup's status; a member is refused by
	// policy even on its own backup, and "admin:p1" is no admin.
	vol, _ := e.volume("v", "p1", 1<<20, 1)
	id := e.must(202, "POST", "/v3/p1/backups", alice, 51, map[string]any{"backup": map[string]any{"volume_id": vol}}).obj("backup")["id"].(string)
	e.wait("/v3/p1/backups/"+id, alice, "backup")
	// The refusal comes before the lookup, the same for any id: it tells
	// a member of another project nothing.
	for _, tok := range []string{alice, "admin:p1", "alice"} {
		path := "/v3/backups/" + id + "/action"
		r := e.call("POST", path, tok, 51, map[string]any{"os-reset_status": map[string]any{"status": "error"}})
		r.fault(t, 403, "forbidden", "Policy doesn't allow backup:backup-reset_status", "is a member of project")
	}
	e.must(202, "POST", "/v3/admin/backups/"+id+"/action", admin, 51, map[string]any{"os-reset_status": map[string]any{"status": "error"}})
	if b, _ := e.s.ShowBackup(adminCtx, id); b.Status != "error" {
		t.Errorf("after the admin's reset: %s", b.Status)
	}
}

// TestTokenFile: with a token file, only its tokens are accepted, with
// the project and role it gives; a file others can read is refused at
// start; tokens added later work without a restart.
func TestTokenFile(t *testing.T) {
	home := t.TempDir()
	tf := filepath.Join(home, "tokens")
	write := func(s string, mode os.FileMode) {
		if err := os.WriteFile(tf, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(tf, mode)
	}
	write("s3cret-ops ops admin olga\n", 0o644)
	cfg, err := service.LoadConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	cfg.API.TokenFile, cfg.API.AuthStrategy = tf, "tokens"
	if _, err := newTokenFile(tf); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a token file others can read: %v", err)
	}
	write("# ops\ns3cret-ops ops admin olga\ns3cret-p1 p1 member\n", 0o600)
	e := newEnv(t, "[api]\ntoken_file = \""+tf+"\"\n")
	e.call("GET", "/v3/backups", "alice:p1", 51, nil).fault(t, 401, "unauthorized", "not one of "+tf)
	e.call("GET", "/v3/backups", "", 51, nil).fault(t, 401, "unauthorized", "token file")
	e.must(200, "GET", "/v3/p1/backups", "s3cret-p1", 51, nil)
	e.must(200, "GET", "/v3/p1/backups", "s3cret-p1:p1", 51, nil) // cinder's noauth shape: TOKEN:PROJECT
	e.call("GET", "/v3/backups", "s3cret-p1:ops", 51, nil).fault(t, 401, "unauthorized", "project p1, not ops")
	e.call("GET", "/v3/ops/backups", "s3cret-p1", 51, nil).fault(t, 400, "badRequest", "project ops in the URL")
	// olga is an admin of ops: she may list services' state and update p1's quota.
	e.must(200, "PUT", "/v3/ops/os-quota-sets/p1", "s3cret-ops", 51, map[string]any{"quota_set": map[string]any{"backups": 3}})
	e.call("PUT", "/v3/p1/os-quota-sets/p1", "s3cret-p1", 51, map[string]any{"quota_set": map[string]any{"backups": 30}}).
		fault(t, 403, "forbidden", "volume_extension:quotas:update", "user token-p1")
	if q, _ := e.s.ShowQuota(adminCtx, service.QuotaRequest{Project: "p1"}); q.Backups != 3 {
		t.Errorf("p1's backups quota %d, want 3", q.Backups)
	}
	write("s3cret-ops ops admin olga\ns3cret-p1 p1 member\nnew-one p2 member bob\n", 0o600)
	e.must(200, "GET", "/v3/p2/volumes", "new-one", 51, nil)
	for content, want := range map[string]string{
		"a p1 member\na p2 member\n": "listed twice",
		"a p1 owner\n":               "role \"owner\"",
		"a p/1 member\n":             "project id",
		"a p1 member x y\n":          "got 5 fields",
	} {
		path := filepath.Join(t.TempDir(), "t")
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := newTokenFile(path); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "line") {
			t.Errorf("token file %q: %v, want an error naming the line and %q", content, err, want)
		}
	}
	write("broken line\n", 0o600)
	e.call("GET", "/v3/p2/volumes", "new-one", 51, nil).fault(t, 500, "computeFault", "TOKEN PROJECT ROLE")
}

// TestBackupsOverHTTP drives every backup route: create (202 at once,
// creating, then available, its bytes restorable), incremental, list and
// detail, show by microversion, restore to a new volume and over an
// existing one, export and import into another home on the same
// repository, delete, and the refusals of each.
func TestBackupsOverHTTP(t *testing.T) {
	e := newEnv(t, "")
	vol, data := e.volume("db", "admin", 4<<20, 1)

	r := e.must(202, "POST", "/v3/admin/backups", admin, 51, map[string]any{"backup": map[string]any{
		"volume_id": vol, "name": "full", "description": "nightly", "container": nil, "incremental": false, "force": false, "snapshot_id": nil}})
	created := r.obj("backup")
	if created["status"] != "creating" || created["name"] != "full" || created["volume_id"] != vol {
		t.Fatalf("create answered %v", created)
	}
	full := created["id"].(string)
	b := e.wait("/v3/backups/"+full, admin, "backup")
	if b["status"] != "available" || b["description"] != "nightly" || b["is_incremental"] != false || b["size"] != float64(1) {
		t.Fatalf("the backup ended %v", b)
	}

	// An incremental of the changed volume.
	copy(data[1<<20:], bytes.Repeat([]byte{7}, 64<<10))
	if err := os.WriteFile(filepath.Join(e.home, "db.img"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	inc := e.must(202, "POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{
		"volume_id": vol, "name": "inc", "incremental": true}}).obj("backup")["id"].(string)
	ib := e.wait("/v3/backups/"+inc, admin, "backup")
	if ib["is_incremental"] != true || ib["volback:parent_id"] != full {
		t.Fatalf("incremental: %v", ib)
	}
	if fb := e.must(200, "GET", "/v3/backups/"+full, admin, 51, nil).obj("backup"); fb["has_dependent_backups"] != true {
		t.Errorf("the full backup does not show its dependent: %v", fb)
	}

	// Fields by microversion.
	for _, c := range []struct {
		minor   int
		has     []string
		hasNone []string
	}{
		{0, nil, []string{"metadata", "user_id", "encryption_key_id", "os-backup-project-attr:project_id"}},
		{18, []string{"os-backup-project-attr:project_id"}, []string{"metadata", "user_id"}},
		{43, []string{"metadata"}, []string{"user_id"}},
		{56, []string{"user_id"}, []string{"encryption_key_id"}},
		{64, []string{"user_id", "encryption_key_id", "metadata"}, nil},
	} {
		got := e.must(200, "GET", "/v3/backups/"+inc, admin, c.minor, nil).obj("backup")
		for _, k := range c.has {
			if _, ok := got[k]; !ok {
				t.Errorf("3.%d: no %s", c.minor, k)
			}
		}
		for _, k := range c.hasNone {
			if _, ok := got[k]; ok {
				t.Errorf("3.%d: has %s", c.minor, k)
			}
		}
	}

	// Lists: summaries and details, newest first.
	sum := e.must(200, "GET", "/v3/admin/backups", admin, 51, nil).list("backups")
	det := e.must(200, "GET", "/v3/backups/detail", admin, 51, nil).list("backups")
	if len(sum) != 2 || len(det) != 2 || sum[0]["id"] != inc || det[1]["id"] != full || len(sum[0]) != 3 || det[0]["status"] != "available" {
		t.Fatalf("lists: %v / %v", sum, det)
	}

	// Restore to a new volume: its bytes are the incremental's.
	rr := e.must(202, "POST", "/v3/backups/"+inc+"/restore", admin, 51, map[string]any{"restore": map[string]any{"volume_id": nil, "name": "copy"}}).obj("restore")
	if rr["backup_id"] != inc || rr["volume_name"] != "copy" {
		t.Fatalf("restore answered %v", rr)
	}
	nv := e.wait("/v3/volumes/"+rr["volume_id"].(string), admin, "volume")
	if nv["status"] != "available" || !bytes.Equal(fileBytes(t, nv["volback:path"].(string), len(data)), data) {
		t.Fatalf("the restored volume is %v, or its bytes differ", nv["status"])
	}
	// Restore over the existing volume: back to the full backup's bytes.
	e.must(202, "POST", "/v3/backups/"+full+"/restore", admin, 51, map[string]any{"restore": map[string]any{"volume_id": rr["volume_id"]}})
	e.wait("/v3/volumes/"+rr["volume_id"].(string), admin, "volume")
	e.wait("/v3/backups/"+full, admin, "backup")
	first := image(t, filepath.Join(t.TempDir(), "x"), 4<<20, 1)
	if !bytes.Equal(fileBytes(t, nv["volback:path"].(string), len(first)), first) {
		t.Fatal("the volume restored over does not hold the full backup's bytes")
	}

	// Export, then import into another home serving the same repository.
	rec := e.must(200, "GET", "/v3/backups/"+full+"/export_record", admin, 51, nil).obj("backup-record")
	if rec["backup_service"] != "volback.drivers.posix" || rec["backup_url"] == "" {
		t.Fatalf("export: %v", rec)
	}
	other := newEnvAt(t, t.TempDir(), fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\n", filepath.Join(e.home, "repository")))
	imp := other.must(201, "POST", "/v3/backups/import_record", admin, 51, map[string]any{"backup-record": rec}).obj("backup")
	if imp["id"] != full {
		t.Fatalf("import answered %v", imp)
	}
	if ob, err := other.s.ShowBackup(adminCtx, full); err != nil || ob.Status != "available" {
		t.Fatalf("the imported backup: %v, %v", ob, err)
	}
	other.call("POST", "/v3/backups/import_record", admin, 51, map[string]any{"backup-record": rec}).fault(t, 400, "badRequest", "Backup already exists in database.")
	other.call("POST", "/v3/backups/import_record", admin, 51, map[string]any{"backup-record": map[string]any{"backup_service": "x"}}).fault(t, 400, "badRequest", "backup_url")
	other.call("POST", "/v3/backups/import_record", admin, 51, map[string]any{"backup-record": map[string]any{"backup_service": "volback.drivers.posix", "backup_url": "!!"}}).
		fault(t, 400, "badRequest", "not base64")
	other.call("POST", "/v3/p1/backups/import_record", alice, 51, map[string]any{"backup-record": rec}).fault(t, 403, "forbidden", "backup:backup-import")

	// An update that changes nothing (what openstack volume backup set
	// sends with --state) answers the backup; renames are refused.
	if u := e.must(200, "PUT", "/v3/backups/"+full, admin, 64, map[string]any{"backup": map[string]any{"metadata": map[string]any{}}}).obj("backup"); u["id"] != full {
		t.Errorf("update: %v", u)
	}

	// Refusals change nothing.
	before := e.state()
	e.call("PUT", "/v3/backups/"+full, admin, 51, map[string]any{"backup": map[string]any{"name": "renamed"}}).fault(t, 400, "badRequest", "does not rename")
	e.call("PUT", "/v3/backups/"+full, admin, 51, map[string]any{"backup": map[string]any{"metadata": map[string]any{"k": "v"}}}).fault(t, 400, "badRequest", "metadata")
	e.call("PUT", "/v3/backups/"+full, admin, 51, map[string]any{"backup": map[string]any{"status": "available"}}).fault(t, 400, "badRequest", "status cannot be updated")
	e.call("DELETE", "/v3/backups/"+full, admin, 51, nil).fault(t, 400, "badRequest", "Incremental backups exist for this backup")
	e.call("POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"name": "x"}}).fault(t, 400, "badRequest", "volume_id is required")
	e.call("POST", "/v3/backups", admin, 51, map[string]any{"volume": map[string]any{"volume_id": vol}}).fault(t, 400, "badRequest", "Missing required element 'backup'")
	e.call("POST", "/v3/backups", admin, 51, `{"backup": `).fault(t, 400, "badRequest", "Malformed request body")
	e.call("POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"volume_id": "0000"}}).fault(t, 404, "itemNotFound", "0000")
	e.call("POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"volume_id": vol, "container": "bucket"}}).fault(t, 400, "badRequest", "container")
	e.call("POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"volume_id": vol, "metadata": map[string]string{"a": "b"}}}).fault(t, 400, "badRequest", "metadata")
	e.call("POST", "/v3/backups", admin, 47, map[string]any{"backup": map[string]any{"volume_id": vol, "availability_zone": "nova"}}).fault(t, 400, "badRequest", "3.51")
	e.call("POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"volume_id": vol, "availability_zone": "far"}}).fault(t, 400, "badRequest", `"far"`)
	e.call("GET", "/v3/backups/"+strings.Repeat("f", 36), admin, 51, nil).fault(t, 404, "itemNotFound")
	e.call("POST", "/v3/backups/"+full+"/restore", admin, 51, map[string]any{"restore": map[string]any{"volume_type": "ssd"}}).fault(t, 400, "badRequest", "volume types")
	e.call("POST", "/v3/backups/"+full+"/action", admin, 51, map[string]any{"os-reset_status": map[string]any{}}).fault(t, 400, "badRequest", "Must specify 'status'")
	e.call("POST", "/v3/backups/"+full+"/action", admin, 51, map[string]any{"os-reset_status": map[string]any{"status": "creating"}}).fault(t, 400, "badRequest", "creating")
	e.call("POST", "/v3/backups/"+full+"/action", admin, 51, map[string]any{"os-frobnicate": nil}).fault(t, 400, "badRequest", "no such action: os-frobnicate")
	e.call("POST", "/v3/backups/"+full+"/action", admin, 51, map[string]any{"a": 1, "b": 2}).fault(t, 400, "badRequest", "one key")
	if after := e.state(); after != before {
		t.Fatalf("refusals changed the catalog:\n%s\nwant\n%s", after, before)
	}

	// Delete, children first; then the backups are gone.
	e.must(202, "DELETE", "/v3/backups/"+inc, admin, 51, nil)
	e.must(202, "DELETE", "/v3/admin/backups/"+full, admin, 51, nil)
	e.call("GET", "/v3/backups/"+full, admin, 51, nil).fault(t, 404, "itemNotFound")
	if bs, _ := e.s.ListBackups(adminCtx, "", true); len(bs) != 0 {
		t.Fatalf("%d backups left after deleting both", len(bs))
	}
}

// TestBackupForceAndSnapshot: a volume in use is refused without force
// (400, nothing made); with force it is backed up through a snapshot
// (crash-consistent); a backup of a named snapshot records it; an admin's
// os-force_delete deletes a backup (and cancels one being created).
func TestBackupForceAndSnapshot(t *testing.T) {
	e := newEnv(t, "")
	vol, _ := e.volume("busy", "admin", 2<<20, 3)
	f, err := os.OpenFile(filepath.Join(e.home, "busy.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		t.Skipf("no OFD locks here: %v", err)
	}
	before := e.state()
	e.call("POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"volume_id": vol}}).
		fault(t, 400, "badRequest", "Backing up an in-use volume must use the force flag")
	if after := e.state(); after != before {
		t.Fatalf("the refused backup changed the catalog:\n%s", after)
	}
	id := e.must(202, "POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"volume_id": vol, "force": true}}).obj("backup")["id"].(string)
	b := e.wait("/v3/backups/"+id, admin, "backup")
	if b["status"] != "available" || b["volback:consistency"] == nil {
		t.Fatalf("forced backup: %v", b)
	}
	f.Close() // the volume is free again

	snap := e.must(202, "POST", "/v3/snapshots", admin, 51, map[string]any{"snapshot": map[string]any{"volume_id": vol, "name": "s1", "force": "False"}}).obj("snapshot")
	sid := snap["id"].(string)
	bid := e.must(202, "POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"volume_id": vol, "snapshot_id": sid}}).obj("backup")["id"].(string)
	if sb := e.wait("/v3/backups/"+bid, admin, "backup"); sb["status"] != "available" || sb["snapshot_id"] != sid {
		t.Fatalf("backup of snapshot %s: %v", sid, sb)
	}

	e.call("POST", "/v3/p1/backups/"+bid+"/action", alice, 51, map[string]any{"os-force_delete": map[string]any{}}).fault(t, 403, "forbidden", "backup:force_delete")
	e.must(202, "POST", "/v3/backups/"+bid+"/action", admin, 51, map[string]any{"os-force_delete": map[string]any{}})
	if _, err := e.s.ShowBackup(adminCtx, bid); err == nil {
		t.Fatal("force-deleted backup still shows")
	}
}
