package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volback/volback/service"
)

// env is a real service on a fresh home (real catalog, real posix
// repository) behind a real HTTP server.
type env struct {
	t    *testing.T
	home string
	s    *service.Service
	srv  *Server
	ts   *httptest.Server
}

// newEnv starts the API over a fresh home; toml, when set, is its
// volback.toml.
func newEnv(t *testing.T, toml string) *env {
	t.Helper()
	home := t.TempDir()
	return newEnvAt(t, home, toml)
}

func newEnvAt(t *testing.T, home, toml string) *env {
	t.Helper()
	if toml != "" {
		if err := os.WriteFile(filepath.Join(home, service.ConfigName), []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := service.LoadConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Workers = 2
	s, err := service.Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(s, log.New(io.Discard, "", 0))
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	e := &env{t: t, home: home, s: s, srv: srv, ts: httptest.NewServer(srv)}
	t.Cleanup(func() {
		e.ts.Close()
		e.srv.Close()
		e.s.Close()
	})
	return e
}

// as is an identity's context, for checking through the service what
// the API did.
func as(project, role string) context.Context {
	return service.WithIdentity(context.Background(), service.Identity{UID: -1, User: "test", Project: project, Role: role})
}

var adminCtx = as("admin", service.RoleAdmin)

// resp is an answer: status, headers and the decoded JSON body.
type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// call sends method path (under the server) with token and body (nil, a
// string sent as is, or a value sent as JSON), asking for microversion
// 3.minor (-1: no header).
func (e *env) call(method, path, token string, minor int, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if minor >= 0 {
		req.Header.Set(versionHeader, fmt.Sprintf("volume 3.%d", minor))
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			e.t.Fatalf("%s %s: %d, body not JSON: %q", method, path, res.StatusCode, raw)
		}
	}
	return r
}

// must is call expecting status.
func (e *env) must(status int, method, path, token string, minor int, body any) resp {
	e.t.Helper()
	r := e.call(method, path, token, minor, body)
	if r.status != status {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.raw, status)
	}
	return r
}

// fault checks a Cinder error body: {"name": {"message": ..., "code": status}}
// with a message holding every word.
func (r resp) fault(t *testing.T, status int, name string, words ...string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d (%s), want %d", r.status, r.raw, status)
		return
	}
	f, ok := r.body[name].(map[string]any)
	if !ok || f["code"] != float64(status) {
		t.Errorf("body %s, want a %q fault with code %d", r.raw, name, status)
		return
	}
	msg, _ := f["message"].(string)
	for _, w := range words {
		if !strings.Contains(msg, w) {
			t.Errorf("fault message %q does not mention %q", msg, w)
		}
	}
}

// obj is a member object of a JSON body.
func (r resp) obj(key string) map[string]any {
	m, _ := r.body[key].(map[string]any)
	return m
}

// list is a member array of a JSON body, as objects.
func (r resp) list(key string) []map[string]any {
	var out []map[string]any
	for _, v := range r.body[key].([]any) {
		out = append(out, v.(map[string]any))
	}
	return out
}

// image writes an image file of size bytes of seeded random data with
// zero stretches and returns its bytes.
func image(t *testing.T, path string, size int64, seed uint64) []byte {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i+8 <= len(b); i += 8 {
		if (i/(256<<10))%4 == 3 {
			continue
		}
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// volume registers a new image volume of project p (by the service, as
// an admin would with volback manage) and returns its id and bytes.
func (e *env) volume(name, project string, size int64, seed uint64) (string, []byte) {
	e.t.Helper()
	path := filepath.Join(e.home, name+".img")
	data := image(e.t, path, size, seed)
	v, err := e.s.Manage(adminCtx, service.ManageRequest{Name: name, Source: path, Project: project})
	if err != nil {
		e.t.Fatal(err)
	}
	return v.ID, data
}

// wait polls GET path until the JSON object key's status is not one of
// the transitional ones, and returns that object.
func (e *env) wait(path, token, key string) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := e.must(200, "GET", path, token, 51, nil)
		o := r.obj(key)
		switch o["status"] {
		case "creating", "restoring", "restoring-backup", "deleting", "backing-up":
		default:
			return o
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s still %v after 60s", path, o["status"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fileBytes reads a volume's image file.
func fileBytes(t *testing.T, path string, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < n {
		t.Fatalf("%s has %d bytes, want at least %d", path, len(b), n)
	}
	return b[:n]
}

// state is the catalog as the admin sees it: every backup's and volume's
// status, for checking that a refusal changed nothing.
func (e *env) state() string {
	e.t.Helper()
	var sb strings.Builder
	bs, err := e.s.ListBackups(adminCtx, "", true)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, b := range bs {
		fmt.Fprintf(&sb, "backup %s %s %s %s\n", b.ID, b.Name, b.Status, b.ProjectID)
	}
	vs, err := e.s.ListVolumes(adminCtx, true)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, v := range vs {
		fmt.Fprintf(&sb, "volume %s %s %s %s\n", v.ID, v.Name, v.Status, v.ProjectID)
	}
	ss, err := e.s.ListSnapshots(adminCtx, "", true)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range ss {
		fmt.Fprintf(&sb, "snapshot %s %s\n", s.ID, s.Status)
	}
	q, _ := e.s.QuotaUsage(adminCtx, service.QuotaRequest{})
	fmt.Fprintf(&sb, "quota %v\n", q)
	return sb.String()
}

const (
	admin = "admin:admin" // noauth: the admin
	alice = "alice:p1"    // noauth: a member of p1
	bob   = "bob:p2"      // noauth: a member of p2
)
