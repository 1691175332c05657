package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAPILoad: 50 concurrent API clients list and show backups and
// volumes while 4 backups run in the background; every request answers
// 200 (no failure, no 5xx), within a bounded time, and the backups end
// available.
func TestAPILoad(t *testing.T) {
	home := newHome(t)
	const volumes, clients = 4, 50
	const volSize = 96 * mib
	var ids []string
	for i := range volumes {
		img := filepath.Join(home, fmt.Sprintf("v%d.img", i))
		randomFile(t, img, volSize, uint64(200+i))
		ids = append(ids, manage(t, home, fmt.Sprintf("v%d", i), img).ID)
	}
	ep := serveHTTP(t, home)
	get := func(c *http.Client, path string) (int, []byte, error) {
		req, _ := http.NewRequest("GET", ep+path, nil)
		req.Header.Set("X-Auth-Token", "admin:admin")
		req.Header.Set("OpenStack-API-Version", "volume 3.51")
		res, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, b, err
	}

	// Start the 4 backups: each answers 202 at once.
	var backups []string
	for _, v := range ids {
		req, _ := http.NewRequest("POST", ep+"/backups", strings.NewReader(`{"backup": {"volume_id": "`+v+`"}}`))
		req.Header.Set("X-Auth-Token", "admin:admin")
		began := time.Now()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Backup struct{ ID, Status string } `json:"backup"`
		}
		json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		if res.StatusCode != 202 || body.Backup.Status != "creating" || time.Since(began) > 2*time.Second {
			t.Fatalf("backup-create of %s: %d %+v after %v", v, res.StatusCode, body, time.Since(began))
		}
		backups = append(backups, body.Backup.ID)
	}

	// 50 clients, each on its own connections, until the backups are done.
	var stop atomic.Bool
	var mu sync.Mutex
	var lat []time.Duration
	codes := map[int]int{}
	var failures []string
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}, Timeout: 60 * time.Second}
			defer c.CloseIdleConnections()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for n := 0; !stop.Load() || n < 3; n++ {
				var path string
				switch r.IntN(4) {
				case 0:
					path = "/backups/detail?all_tenants=1"
				case 1:
					path = "/volumes/detail"
				case 2:
					path = "/backups"
				default:
					path = "/backups/" + backups[r.IntN(len(backups))]
				}
				began := time.Now()
				code, body, err := get(c, path)
				d := time.Since(began)
				mu.Lock()
				lat = append(lat, d)
				codes[code]++
				if err != nil || code != 200 {
					failures = append(failures, fmt.Sprintf("GET %s: %d %v %.200s", path, code, err, body))
				}
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(3 * time.Minute)
	poll := &http.Client{}
	for {
		done := 0
		for _, id := range backups {
			_, body, err := get(poll, "/backups/"+id)
			if err == nil && !strings.Contains(string(body), `"status":"creating"`) {
				done++
			}
		}
		if done == len(backups) {
			break
		}
		if time.Now().After(deadline) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("the 4 backups did not finish within 3 minutes under load")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)

	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("load: %d clients, %d requests in %v (%.0f/s) while %d backups of %d MiB ran; latency p50 %v p95 %v p99 %v max %v; statuses %v",
		clients, len(lat), elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds(), volumes, volSize/mib,
		pct(0.5).Round(time.Microsecond), pct(0.95).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), codes)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed, e.g. %s", len(failures), len(lat), failures[0])
	}
	if max := lat[len(lat)-1]; max > 10*time.Second {
		t.Errorf("slowest request took %v, want under 10s", max)
	}
	for _, id := range backups {
		b := held(t, home, id)
		if b.Status != "available" || b.ObjectCount != volSize/(64*kib) {
			t.Errorf("backup %s under load: %s, %d chunks", id, b.Status, b.ObjectCount)
		}
	}
}

// TestCLIOverHTTP: volback --os-endpoint (or OS_VOLUME_ENDPOINT) runs its
// verbs on a remote volback serve over HTTP, with noauth's OS_USER_ID and
// OS_PROJECT_ID; /metrics then counts the backup it made.
func TestCLIOverHTTP(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(home, "db.img")
	randomFile(t, img, 8*mib, 301)
	vol := manage(t, home, "db", img)
	ep := serveHTTP(t, home)
	elsewhere := newHome(t) // the client's own home stays untouched
	remote := func(env []string, args ...string) (string, string, int) {
		cmd := exec.Command(bin, append([]string{"--home", elsewhere, "-f", "json"}, args...)...)
		for _, kv := range cleanEnv() {
			if !strings.HasPrefix(kv, "OS_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("volback %s -> %d\n%s", strings.Join(args, " "), code, errb.String())
		return out.String(), errb.String(), code
	}
	admin := []string{"OS_USER_ID=admin", "OS_PROJECT_ID=admin"}
	out, _, code := remote(append(admin, "OS_VOLUME_ENDPOINT="+ep), "backup-create", "--name", "remote", "db")
	var b Backup
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || b.Status != "available" || b.VolumeID != vol.ID {
		t.Fatalf("backup-create over HTTP: %d %s", code, out)
	}
	if h := held(t, home, b.ID); h.Status != "available" || h.Name != "remote" {
		t.Fatalf("the serving home holds %+v", h)
	}
	if _, err := os.Stat(filepath.Join(elsewhere, "catalog")); err == nil {
		t.Error("the client opened a catalog of its own")
	}
	_, stderr, code := remote(admin, "--os-endpoint", ep, "backup-show", "no-such-backup")
	if code != 1 || !strings.Contains(stderr, "no-such-backup") {
		t.Errorf("backup-show of a missing backup over HTTP: %d %s", code, stderr)
	}
	_, stderr, code = remote([]string{"OS_USER_ID=bob", "OS_PROJECT_ID=p2"}, "--os-endpoint", ep, "backup-show", b.ID)
	if code != 1 || !strings.Contains(stderr, "not found") {
		t.Errorf("another project's backup over HTTP: %d %s", code, stderr)
	}
	_, stderr, code = remote(nil, "--os-endpoint", ep, "backup-list")
	if code != 1 || !strings.Contains(stderr, "OS_AUTH_TOKEN") {
		t.Errorf("no credentials: %d %s", code, stderr)
	}
	res, err := http.Get(strings.TrimSuffix(ep, "/v3") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, w := range []string{`volback_jobs_total{kind="backup",status="available"} 1`, `volback_backups{project="admin",status="available"} 1`} {
		if !strings.Contains(string(metrics), w+"\n") {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}
