package api

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/volback/volback/service"
)

// scrape reads /metrics into name{labels} -> value.
func (e *env) scrape() map[string]float64 {
	e.t.Helper()
	res, err := http.Get(e.ts.URL + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
		e.t.Fatalf("/metrics: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			e.t.Fatalf("metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetrics: /metrics in Prometheus' text format reports what the
// service did: backups by status from the catalog, each volume's newest
// backup time, accepted jobs by outcome, bytes read, zero, deduplicated,
// new and stored (equal to the backups' own figures), bytes restored,
// the repository's size, operations by result.
func TestMetrics(t *testing.T) {
	registerTestJob(t)
	defer func(d time.Duration) { repoEvery = d }(repoEvery)
	repoEvery = 0
	e := newEnv(t, "[api]\njobs = 1\n")
	before := e.scrape()
	vol, _ := e.volume("db", "p1", 4<<20, 1) // every fourth 256 KiB is zeros
	var stored float64
	for i := range 2 {
		id := e.must(202, "POST", "/v3/backups", alice, 51, map[string]any{"backup": map[string]any{"volume_id": vol}}).obj("backup")["id"].(string)
		b := e.wait("/v3/backups/"+id, alice, "backup")
		if b["status"] != "available" {
			t.Fatalf("backup %d: %v", i, b)
		}
		stored += b["volback:stored_bytes"].(float64)
	}
	bv, _ := e.s.ListBackups(adminCtx, "", true)
	rv := e.must(202, "POST", "/v3/backups/"+bv[0].ID+"/restore", alice, 51, map[string]any{"restore": map[string]any{"name": "r"}}).obj("restore")
	e.wait("/v3/volumes/"+rv["volume_id"].(string), alice, "volume")

	// A backup that waits for the only worker and is force-deleted: an
	// accepted job that ended in error.
	e.must(202, "POST", "/v3/test-jobs/busy", admin, 51, nil)
	id := e.must(202, "POST", "/v3/backups", alice, 51, map[string]any{"backup": map[string]any{"volume_id": vol}}).obj("backup")["id"].(string)
	e.must(202, "POST", "/v3/backups/"+id+"/action", admin, 51, map[string]any{"os-force_delete": map[string]any{}})
	e.call("GET", "/v3/backups/"+id, alice, 51, nil).fault(t, 404, "itemNotFound")
	close(testJobs.release)

	m := e.scrape()
	const mib = 1 << 20
	for name, want := range map[string]float64{
		`volback_backups{project="p1",status="available"}`:                2,
		`volback_volumes{project="p1",status="available"}`:                2,
		`volback_backup_read_bytes_total`:                                 8 * mib, // two backups of 4 MiB
		`volback_backup_zero_bytes_total`:                                 2 * mib,
		`volback_backup_new_bytes_total`:                                  3 * mib, // the first backup's data
		`volback_backup_deduplicated_bytes_total`:                         3 * mib, // the second's
		`volback_backup_stored_bytes_total`:                               stored,
		`volback_restore_written_bytes_total`:                             3 * mib, // holes stay holes in a new volume
		`volback_operations_total{result="not_found",verb="backup-show"}`: 1,
	} {
		if got := m[name]; got-before[name] != want {
			t.Errorf("%s = %v (before %v), want +%v", name, got, before[name], want)
		}
	}
	for name, want := range map[string]float64{
		`volback_jobs_total{kind="backup",status="available"}`:  2,
		`volback_jobs_total{kind="restore",status="available"}`: 1,
		`volback_jobs_total{kind="backup",status="error"}`:      1,
	} {
		if got := m[name] - before[name]; got != want {
			t.Errorf("%s rose by %v, want %v", name, got, want)
		}
	}
	if n := m[`volback_job_duration_seconds_count{kind="backup",status="available"}`] - before[`volback_job_duration_seconds_count{kind="backup",status="available"}`]; n != 2 {
		t.Errorf("backup durations observed: %v, want 2", n)
	}
	newest := bv[0].DataTimestamp
	key := `volback_volume_last_backup_timestamp_seconds{project="p1",volume_id="` + vol + `",volume_name="db"}`
	if got := m[key]; time.Duration((got-float64(newest.UnixMilli())/1000)*1e9).Abs() > time.Millisecond {
		t.Errorf("%s = %v, want %v", key, got, float64(newest.UnixMilli())/1000)
	}
	repoKey := `volback_repository_bytes{repository="file://` + e.home + `/repository",zone="nova"}`
	if got := m[repoKey]; got < stored {
		t.Errorf("%s = %v, want at least the %v bytes stored", repoKey, got, stored)
	}
	if m[`volback_api_jobs_capacity`] != 1 {
		t.Errorf("jobs capacity %v, want 1", m[`volback_api_jobs_capacity`])
	}
}

// TestMountMetrics: a mount process's /metrics counts its chunk cache's
// hits and misses: reading an image twice misses once per chunk, then hits.
func TestMountMetrics(t *testing.T) {
	e := newEnv(t, "")
	vol, data := e.volume("v", "admin", 1<<20, 3)
	b, err := e.s.CreateBackup(adminCtx, service.BackupRequest{Volume: vol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ms := service.NewMountSource(Local{e.s}, 64<<20)
	defer ms.Close()
	img, err := ms.OpenImage(adminCtx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, len(data))
	for range 2 {
		if _, err := img.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	ts := httptest.NewServer(MountMetrics(ms))
	defer ts.Close()
	res, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	hits, misses := ms.CacheStats()
	chunks := uint64(b.ObjectCount)
	if misses != chunks || hits < chunks {
		t.Errorf("cache: %d hits, %d misses; want %d misses (one per stored chunk) and at least as many hits", hits, misses, chunks)
	}
	for _, w := range []string{"volback_mount_cache_hits_total " + strconv.FormatUint(hits, 10), "volback_mount_cache_misses_total " + strconv.FormatUint(misses, 10)} {
		if !strings.Contains(string(body), w+"\n") {
			t.Errorf("mount metrics lack %q:\n%s", w, body)
		}
	}
}
