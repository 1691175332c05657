package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/service"
)

// TestVolumesOverHTTP: create an empty volume (its size in GiB), create
// one from a backup (3.47; its bytes are the backup's), show, list with
// filters, delete; and the refusals.
func TestVolumesOverHTTP(t *testing.T) {
	e := newEnv(t, "")
	src, data := e.volume("src", "p1", 3<<20, 5)
	bid := e.must(202, "POST", "/v3/p1/backups", alice, 51, map[string]any{"backup": map[string]any{"volume_id": src}}).obj("backup")["id"].(string)
	e.wait("/v3/p1/backups/"+bid, alice, "backup")

	empty := e.must(202, "POST", "/v3/p1/volumes", alice, 51, map[string]any{"volume": map[string]any{"size": 1, "name": "scratch"}}).obj("volume")
	if empty["status"] != "available" || empty["size"] != float64(1) || empty["name"] != "scratch" {
		t.Fatalf("empty volume: %v", empty)
	}
	if _, ok := empty["os-vol-tenant-attr:tenant_id"]; ok {
		t.Error("a member sees the admin-only tenant attribute")
	}
	if _, ok := empty["volback:path"]; ok {
		t.Error("a member sees the volume's path on the server")
	}
	fromBackup := e.must(202, "POST", "/v3/p1/volumes", alice, 47, map[string]any{"volume": map[string]any{
		"size": nil, "backup_id": bid, "name": nil, "snapshot_id": nil, "imageRef": nil, "volume_type": nil, "metadata": map[string]any{}}}).obj("volume")
	if fromBackup["name"] != "restore_backup_"+bid {
		t.Errorf("a nameless volume from a backup is named %v", fromBackup["name"])
	}
	v := e.wait("/v3/p1/volumes/"+fromBackup["id"].(string), alice, "volume")
	if v["status"] != "available" {
		t.Fatalf("volume from backup: %v", v)
	}
	got, err := e.s.ShowVolume(adminCtx, v["id"].(string))
	if err != nil || got.ProjectID != "p1" || !bytes.Equal(fileBytes(t, got.Path, len(data)), data) {
		t.Fatalf("the volume made from the backup: %+v %v, or its bytes differ", got, err)
	}

	names := func(r resp) string {
		var n []string
		for _, v := range r.list("volumes") {
			n = append(n, fmt.Sprint(v["name"]))
		}
		return strings.Join(n, ",")
	}
	if n := names(e.must(200, "GET", "/v3/p1/volumes/detail?name=scratch", alice, 51, nil)); n != "scratch" {
		t.Errorf("filter by name: %s", n)
	}
	if n := names(e.must(200, "GET", "/v3/volumes?sort=name:asc", alice, 51, nil)); n != "restore_backup_"+bid+",scratch,src" {
		t.Errorf("sorted by name: %s", n)
	}
	if n := names(e.must(200, "GET", "/v3/volumes/detail?status=error", alice, 51, nil)); n != "" {
		t.Errorf("filter by status: %s", n)
	}
	if c := e.must(200, "GET", "/v3/volumes/detail", alice, 65, nil).list("volumes")[0]; c["consumes_quota"] != true || c["volume_type_id"] != nil {
		t.Errorf("3.65 detail: %v", c)
	}

	before := e.state()
	e.call("POST", "/v3/volumes", alice, 51, map[string]any{"volume": map[string]any{"name": "x"}}).fault(t, 400, "badRequest", "size")
	e.call("POST", "/v3/volumes", alice, 51, map[string]any{"volume": map[string]any{"size": -1}}).fault(t, 400, "badRequest", "size")
	e.call("POST", "/v3/volumes", alice, 46, map[string]any{"volume": map[string]any{"backup_id": bid, "size": 1}}).fault(t, 400, "badRequest", "3.47")
	e.call("POST", "/v3/volumes", alice, 51, map[string]any{"volume": map[string]any{"size": 1, "snapshot_id": "x"}}).fault(t, 400, "badRequest", "snapshot_id")
	e.call("POST", "/v3/volumes", alice, 51, map[string]any{"volume": map[string]any{"size": 1, "volume_type": "ssd"}}).fault(t, 400, "badRequest", "volume_type")
	e.call("POST", "/v3/volumes", alice, 51, map[string]any{"volume": map[string]any{"size": 1, "availability_zone": "mars"}}).fault(t, 400, "badRequest", "mars")
	e.call("POST", "/v3/volumes", alice, 51, map[string]any{"volume": map[string]any{"backup_id": strings.Repeat("a", 36)}}).fault(t, 404, "itemNotFound")
	e.call("GET", "/v3/volumes?frobnicate=1", alice, 51, nil).fault(t, 400, "badRequest", "Invalid filters frobnicate")
	if after := e.state(); after != before {
		t.Fatalf("refusals changed the catalog:\n%s\nwant\n%s", after, before)
	}

	e.must(202, "DELETE", "/v3/p1/volumes/"+empty["id"].(string), alice, 51, nil)
	e.call("GET", "/v3/p1/volumes/"+empty["id"].(string), alice, 51, nil).fault(t, 404, "itemNotFound")
}

// TestSnapshotsOverHTTP: create, list, detail, show, delete, refusals.
func TestSnapshotsOverHTTP(t *testing.T) {
	e := newEnv(t, "")
	vol, _ := e.volume("v", "p1", 1<<20, 2)
	s := e.must(202, "POST", "/v3/p1/snapshots", alice, 51, map[string]any{"snapshot": map[string]any{"volume_id": vol, "name": "s", "description": "d", "force": false}}).obj("snapshot")
	if s["status"] != "available" || s["volume_id"] != vol || s["name"] != "s" || s["size"] != float64(1) {
		t.Fatalf("snapshot: %v", s)
	}
	id := s["id"].(string)
	if l := e.must(200, "GET", "/v3/snapshots", alice, 51, nil).list("snapshots"); len(l) != 1 || l[0]["id"] != id {
		t.Fatalf("list: %v", l)
	}
	if d := e.must(200, "GET", "/v3/snapshots/detail?volume_id="+vol, alice, 41, nil).list("snapshots"); len(d) != 1 || d[0]["user_id"] != nil || d[0]["status"] != "available" {
		t.Fatalf("detail: %v", d)
	} else if _, ok := d[0]["user_id"]; !ok {
		t.Errorf("3.41 detail without user_id: %v", d[0])
	}
	if g := e.must(200, "GET", "/v3/p1/snapshots/"+id, alice, 51, nil).obj("snapshot"); g["id"] != id {
		t.Fatalf("show: %v", g)
	}
	e.call("POST", "/v3/snapshots", alice, 51, map[string]any{"snapshot": map[string]any{"name": "x"}}).fault(t, 400, "badRequest", "volume_id is required")
	e.call("POST", "/v3/snapshots", alice, 51, map[string]any{"snapshot": map[string]any{"volume_id": vol, "force": "perhaps"}}).fault(t, 400, "badRequest", "perhaps")
	e.must(202, "DELETE", "/v3/snapshots/"+id, alice, 51, nil)
	e.call("GET", "/v3/snapshots/"+id, alice, 51, nil).fault(t, 404, "itemNotFound")
	if ss, _ := e.s.ListSnapshots(adminCtx, "", true); len(ss) != 0 {
		t.Fatalf("%d snapshots left", len(ss))
	}
}

// TestQuotasOverHTTP: show, usage (in_use, reserved, limit), update by an
// admin (checked against what the service then enforces: 413 over the
// quota), and the refusals.
func TestQuotasOverHTTP(t *testing.T) {
	e := newEnv(t, "")
	vol, _ := e.volume("v", "p1", 1<<20, 2)
	q := e.must(200, "GET", "/v3/p1/os-quota-sets/p1", alice, 51, nil).obj("quota_set")
	if q["id"] != "p1" || q["backups"] != float64(10) || q["backup_gigabytes"] != float64(1000) {
		t.Fatalf("show: %v", q)
	}
	up := e.must(200, "PUT", "/v3/admin/os-quota-sets/p1", admin, 51, map[string]any{"quota_set": map[string]any{"tenant_id": "p1", "backups": 1, "backup_gigabytes": "5"}}).obj("quota_set")
	if up["backups"] != float64(1) || up["backup_gigabytes"] != float64(5) {
		t.Fatalf("update answered %v", up)
	}
	id := e.must(202, "POST", "/v3/backups", alice, 51, map[string]any{"backup": map[string]any{"volume_id": vol}}).obj("backup")["id"].(string)
	e.wait("/v3/backups/"+id, alice, "backup")
	u := e.must(200, "GET", "/v3/p1/os-quota-sets/p1?usage=True", alice, 51, nil).obj("quota_set")
	if b := u["backups"].(map[string]any); b["in_use"] != float64(1) || b["limit"] != float64(1) || b["reserved"] != float64(0) {
		t.Fatalf("usage: %v", u)
	}
	before := e.state()
	e.call("POST", "/v3/backups", alice, 51, map[string]any{"backup": map[string]any{"volume_id": vol}}).fault(t, 413, "overLimit", "Maximum number of backups allowed (1) exceeded")
	e.call("PUT", "/v3/os-quota-sets/p1", alice, 51, map[string]any{"quota_set": map[string]any{"backups": 5}}).fault(t, 403, "forbidden", "quotas:update")
	e.call("GET", "/v3/os-quota-sets/p2", alice, 51, nil).fault(t, 403, "forbidden", "may see only its quotas")
	e.call("PUT", "/v3/os-quota-sets/p1", admin, 51, map[string]any{"quota_set": map[string]any{"volumes": 5}}).fault(t, 400, "badRequest", "Bad key(s) in quota_set: volumes")
	e.call("PUT", "/v3/os-quota-sets/p1", admin, 51, map[string]any{"quota_set": map[string]any{"tenant_id": "p1"}}).fault(t, 400, "badRequest", "at least one quota")
	e.call("PUT", "/v3/os-quota-sets/p1", admin, 51, map[string]any{"quota_set": map[string]any{"backups": 0}}).fault(t, 400, "badRequest", "Current usage is 1")
	e.call("PUT", "/v3/os-quota-sets/p1", admin, 51, map[string]any{"quota_set": map[string]any{"backups": "many"}}).fault(t, 400, "badRequest", "not an integer")
	e.call("GET", "/v3/os-quota-sets/p1?usage=maybe", alice, 51, nil).fault(t, 400, "badRequest", "usage")
	if after := e.state(); after != before {
		t.Fatalf("refusals changed the catalog:\n%s\nwant\n%s", after, before)
	}
}

// TestServicesOverHTTP: the backup service of each zone, the volume
// drivers and the catalog owner, filtered by binary.
func TestServicesOverHTTP(t *testing.T) {
	e := newEnv(t, "")
	all := e.must(200, "GET", "/v3/os-services", alice, 51, nil).list("services")
	bins := map[string]bool{}
	for _, s := range all {
		bins[s["binary"].(string)] = true
		// The rbd driver of a build without Ceph support is down, saying why.
		noCeph := strings.HasSuffix(fmt.Sprint(s["host"]), "@rbd") && strings.Contains(fmt.Sprint(s["volback:reason"]), "without Ceph support")
		if (s["state"] != "up" && !noCeph) || s["status"] != "enabled" {
			t.Errorf("service %v", s)
		}
	}
	if !bins["volback-backup"] || !bins["volback-volume"] || !bins["volback-catalog"] {
		t.Errorf("services: %v", all)
	}
	one := e.must(200, "GET", "/v3/os-services?binary=volback-backup", alice, 51, nil).list("services")
	if len(one) != 1 || one[0]["zone"] != "nova" {
		t.Errorf("filtered: %v", one)
	}
}

// TestProjectIsolationOverHTTP: a member of p2 never sees or touches
// p1's volumes, snapshots or backups: lists leave them out, every route
// naming one answers exactly as for an id that does not exist (404, or
// the same policy refusal), and nothing changes; the admin sees them with
// all_tenants only.
func TestProjectIsolationOverHTTP(t *testing.T) {
	e := newEnv(t, "")
	vol, _ := e.volume("v1", "p1", 1<<20, 2)
	bid := e.must(202, "POST", "/v3/backups", alice, 51, map[string]any{"backup": map[string]any{"volume_id": vol, "name": "secret"}}).obj("backup")["id"].(string)
	e.wait("/v3/backups/"+bid, alice, "backup")
	sid := e.must(202, "POST", "/v3/snapshots", alice, 51, map[string]any{"snapshot": map[string]any{"volume_id": vol}}).obj("snapshot")["id"].(string)
	e.volume("v2", "p2", 1<<20, 3)

	for _, path := range []string{"/v3/backups/detail", "/v3/p2/backups", "/v3/volumes/detail", "/v3/snapshots/detail", "/v3/backups/detail?all_tenants=1&project_id=p1"} {
		r := e.must(200, "GET", path, bob, 51, nil)
		for _, key := range []string{"backups", "volumes", "snapshots"} {
			if l, ok := r.body[key]; ok {
				for _, item := range l.([]any) {
					if id := item.(map[string]any)["id"]; id == bid || id == vol || id == sid {
						t.Errorf("%s shows p1's %v to p2", path, id)
					}
				}
			}
		}
	}
	before := e.state()
	missing := "00000000-0000-0000-0000-000000000000"
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v3/backups/%s", nil}, {"DELETE", "/v3/backups/%s", nil},
		{"GET", "/v3/backups/%s/export_record", nil},
		{"POST", "/v3/backups/%s/restore", map[string]any{"restore": map[string]any{"name": "stolen"}}},
		{"POST", "/v3/backups/%s/action", map[string]any{"os-force_delete": map[string]any{}}},
		{"POST", "/v3/backups/%s/action", map[string]any{"os-reset_status": map[string]any{"status": "error"}}},
		{"GET", "/v3/volumes/%s", nil}, {"DELETE", "/v3/volumes/%s", nil},
		{"POST", "/v3/backups", map[string]any{"backup": map[string]any{"volume_id": "%s"}}},
		{"POST", "/v3/volumes", map[string]any{"volume": map[string]any{"backup_id": "%s"}}},
		{"POST", "/v3/snapshots", map[string]any{"snapshot": map[string]any{"volume_id": "%s"}}},
		{"GET", "/v3/snapshots/%s", nil}, {"DELETE", "/v3/snapshots/%s", nil},
	} {
		foreign := bid
		switch {
		case strings.Contains(c.path, "volumes/"), strings.Contains(fmt.Sprint(c.body), "volume_id"):
			foreign = vol
		case strings.Contains(c.path, "snapshots/"):
			foreign = sid
		}
		at := func(id string) resp {
			var body any
			if c.body != nil {
				body = strings.ReplaceAll(mustJSON(c.body), "%s", id)
			}
			return e.call(c.method, strings.ReplaceAll(c.path, "%s", id), bob, 51, body)
		}
		f, m := at(foreign), at(missing)
		if f.status != 404 && f.status != 403 {
			t.Errorf("%s %s of p1's resource by p2: %d %s", c.method, c.path, f.status, f.raw)
		}
		if f.status != m.status || strings.ReplaceAll(f.raw, foreign, "ID") != strings.ReplaceAll(m.raw, missing, "ID") {
			t.Errorf("%s %s: p1's resource answers %d %s, a missing one %d %s", c.method, c.path, f.status, f.raw, m.status, m.raw)
		}
	}
	if after := e.state(); after != before {
		t.Fatalf("p2's attempts changed the catalog:\n%s\nwant\n%s", after, before)
	}
	if l := e.must(200, "GET", "/v3/backups", admin, 51, nil).list("backups"); len(l) != 0 {
		t.Errorf("the admin's own list shows others' backups: %v", l)
	}
	if l := e.must(200, "GET", "/v3/backups/detail?all_tenants=1", admin, 51, nil).list("backups"); len(l) != 1 || l[0]["os-backup-project-attr:project_id"] != "p1" {
		t.Errorf("the admin's all_tenants list: %v", l)
	}
	if l := e.must(200, "GET", "/v3/backups/detail?all_tenants=1&project_id=p2", admin, 51, nil).list("backups"); len(l) != 0 {
		t.Errorf("the admin's list of p2: %v", l)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestListPaging: limit and marker walk a list with next links; with_count
// (3.45) counts; sort orders; bad parameters are 400.
func TestListPaging(t *testing.T) {
	e := newEnv(t, "")
	for i := range 5 {
		e.must(202, "POST", "/v3/snapshots", admin, 51, map[string]any{"snapshot": map[string]any{"volume_id": mustVolume(e, i), "name": fmt.Sprintf("s%d", i)}})
	}
	var seen []string
	path := "/v3/snapshots?limit=2&sort=name:asc"
	for path != "" {
		r := e.must(200, "GET", strings.TrimPrefix(path, e.ts.URL), admin, 51, nil)
		for _, s := range r.list("snapshots") {
			seen = append(seen, s["name"].(string))
		}
		path = ""
		if links, ok := r.body["snapshots_links"].([]any); ok {
			path = links[0].(map[string]any)["href"].(string)
		}
	}
	if strings.Join(seen, ",") != "s0,s1,s2,s3,s4" {
		t.Errorf("paged: %v", seen)
	}
	r := e.must(200, "GET", "/v3/snapshots?with_count=true&limit=1", admin, 45, nil)
	if r.body["count"] != float64(5) || len(r.list("snapshots")) != 1 {
		t.Errorf("with_count: %v", r.body)
	}
	if _, ok := e.must(200, "GET", "/v3/snapshots?with_count=true", admin, 44, nil).body["count"]; ok {
		t.Error("count before 3.45")
	}
	e.call("GET", "/v3/snapshots?marker=nope", admin, 51, nil).fault(t, 400, "badRequest", "marker [nope] not found")
	e.call("GET", "/v3/snapshots?limit=x", admin, 51, nil).fault(t, 400, "badRequest", "limit")
	e.call("GET", "/v3/snapshots?offset=-1", admin, 51, nil).fault(t, 400, "badRequest", "offset")
	if l := e.must(200, "GET", "/v3/snapshots?sort=name:asc&offset=3", admin, 51, nil).list("snapshots"); len(l) != 2 || l[0]["name"] != "s3" {
		t.Errorf("offset 3: %v", l)
	}
	e.call("GET", "/v3/snapshots?sort=color", admin, 51, nil).fault(t, 400, "badRequest", "sort key")
	e.call("GET", "/v3/snapshots?sort=name:sideways", admin, 51, nil).fault(t, 400, "badRequest", "sort direction")
	e.call("GET", "/v3/snapshots?all_tenants=maybe", admin, 51, nil).fault(t, 400, "badRequest", "all_tenants")
}

func mustVolume(e *env, i int) string {
	id, _ := e.volume(fmt.Sprintf("v%d", i), "admin", 1<<20, uint64(i))
	return id
}

// TestRoutingErrors: unknown paths 404, known paths with another method
// 405, bodies over the limit 413, all as Cinder's fault bodies.
func TestRoutingErrors(t *testing.T) {
	e := newEnv(t, "")
	e.call("GET", "/v3/backups/x/y/z", admin, 51, nil).fault(t, 404, "itemNotFound", "does not serve")
	e.call("GET", "/v3/os-hosts", admin, 51, nil).fault(t, 404, "itemNotFound")
	e.call("GET", "/v2/volumes", admin, 51, nil).fault(t, 404, "itemNotFound", "/v3/")
	e.call("PATCH", "/v3/backups", admin, 51, nil).fault(t, 405, "badMethod", "PATCH")
	e.call("POST", "/v3/volumes/abc", admin, 51, map[string]any{"volume": map[string]any{"name": "n"}}).fault(t, 405, "badMethod")
	e.call("POST", "/v3/backups", admin, 51, `{"backup": {"volume_id": "`+strings.Repeat("x", maxBody)+`"}}`).fault(t, 413, "overLimit", "too large")
}

// testJobs is a Background operation for the pool tests, POST
// /v3/test-jobs/{id}: accepted at once, then it holds a worker until
// released or cancelled.
var testJobs struct {
	once               sync.Once
	running, peak, ran atomic.Int32
	release            chan struct{}
}

func registerTestJob(t *testing.T) {
	testJobs.once.Do(func() {
		register(def(Op{Verb: "test-job", Background: true},
			func(_ *S, ctx context.Context, r service.Ref, _ PF) (*service.BackupView, error) {
				service.Accepted(ctx, &service.BackupView{ID: r.Ref, Status: "creating"})
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				n := testJobs.running.Add(1)
				for p := testJobs.peak.Load(); n > p && !testJobs.peak.CompareAndSwap(p, n); p = testJobs.peak.Load() {
				}
				defer testJobs.running.Add(-1)
				select {
				case <-testJobs.release:
					testJobs.ran.Add(1)
					return &service.BackupView{ID: r.Ref, Status: "available"}, nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			},
			Route[service.Ref, *service.BackupView]{Method: post, Path: "test-jobs/{id}", Status: 202, Bind: byID,
				Render: func(_ *Request, b *service.BackupView) any { return map[string]any{"job": b} }}))
		indexOnce, routeIndex, collections = sync.Once{}, nil, map[string]bool{}
	})
	testJobs.running.Store(0)
	testJobs.peak.Store(0)
	testJobs.ran.Store(0)
	testJobs.release = make(chan struct{})
}

// TestBackgroundPool: Background operations answer 202 as soon as they
// are accepted, and no more than [api] jobs of them run at once; the rest
// wait and then run. Close cancels the waiting and the running.
func TestBackgroundPool(t *testing.T) {
	registerTestJob(t)
	e := newEnv(t, "[api]\njobs = 2\n")
	start := time.Now()
	for i := range 6 {
		r := e.must(202, "POST", fmt.Sprintf("/v3/test-jobs/j%d", i), admin, 51, nil)
		if r.obj("job")["status"] != "creating" {
			t.Fatalf("job %d answered %v", i, r.body)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("6 accepted jobs took %v to answer", d)
	}
	time.Sleep(100 * time.Millisecond)
	if n := testJobs.running.Load(); n != 2 {
		t.Errorf("%d jobs running, want the pool's 2", n)
	}
	for range 4 {
		testJobs.release <- struct{}{}
	}
	deadline := time.Now().Add(10 * time.Second)
	for testJobs.ran.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if testJobs.ran.Load() != 4 || testJobs.peak.Load() != 2 {
		t.Errorf("ran %d (want 4), at most %d at once (want 2)", testJobs.ran.Load(), testJobs.peak.Load())
	}
	// Two still run: Close cancels them and returns.
	done := make(chan struct{})
	go func() { e.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not stop the background jobs")
	}
	if n := testJobs.running.Load(); n != 0 || testJobs.ran.Load() != 4 {
		t.Errorf("after Close: %d running, %d ran", n, testJobs.ran.Load())
	}
}

// TestShutdownCancelsQueuedBackup: a backup accepted while every worker
// is busy waits, creating, its volume backing-up; when the server closes
// it ends in error (cancelled), its volume available again, its quota
// reservation released.
func TestShutdownCancelsQueuedBackup(t *testing.T) {
	registerTestJob(t)
	e := newEnv(t, "[api]\njobs = 1\n")
	e.must(202, "POST", "/v3/test-jobs/busy", admin, 51, nil) // holds the only worker
	vol, _ := e.volume("v", "admin", 1<<20, 9)
	id := e.must(202, "POST", "/v3/backups", admin, 51, map[string]any{"backup": map[string]any{"volume_id": vol}}).obj("backup")["id"].(string)
	time.Sleep(100 * time.Millisecond)
	if b := e.must(200, "GET", "/v3/backups/"+id, admin, 51, nil).obj("backup"); b["status"] != "creating" {
		t.Fatalf("a backup waiting for a worker is %v", b["status"])
	}
	if v, _ := e.s.ShowVolume(adminCtx, vol); v.Status != "backing-up" {
		t.Fatalf("its volume is %s", v.Status)
	}
	e.srv.Close()
	b, err := e.s.ShowBackup(adminCtx, id)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := e.s.ShowVolume(adminCtx, vol)
	if b.Status != "error" || v.Status != "available" || b.FailReason == nil || !strings.Contains(*b.FailReason, "cancelled") {
		t.Fatalf("after Close: backup %s (%v), volume %s", b.Status, b.FailReason, v.Status)
	}
	if u, _ := e.s.QuotaUsage(adminCtx, service.QuotaRequest{}); u[0].Reserved != 0 {
		t.Errorf("quota still reserved: %+v", u)
	}
}
