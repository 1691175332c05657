package api

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/service"
)

// TestNativeOverHTTP: the CLI's --os-endpoint client runs the same
// operations over HTTP as through the socket, with progress, and errors
// keep their kind (errors.Is works as in process); credentials are
// checked, and only admins act for another project.
func TestNativeOverHTTP(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	vol, _ := e.volume("v", "p1", 2<<20, 4)
	if _, err := DialHTTP(e.ts.URL, "", "", ""); err == nil || !strings.Contains(err.Error(), "OS_AUTH_TOKEN") {
		t.Errorf("no credentials: %v", err)
	}
	if _, err := DialHTTP("ftp://x", "", "u", ""); err == nil {
		t.Error("an ftp endpoint was accepted")
	}
	member, err := DialHTTP(e.ts.URL+"/v3/p1", "", "alice", "p1")
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()

	var progress int
	var b service.BackupView
	if err := member.Call(ctx, "backup-create", service.BackupRequest{Volume: "v", Name: "n"}, &b, func(service.Progress) { progress++ }); err != nil {
		t.Fatal(err)
	}
	if b.Status != "available" || b.VolumeID != vol || b.ProjectID != "p1" || progress == 0 {
		t.Fatalf("backup over HTTP: %+v (%d progress reports)", b, progress)
	}
	var list []service.BackupView
	if err := member.Call(ctx, "backup-list", service.Ref{}, &list, nil); err != nil || len(list) != 1 || list[0].ID != b.ID {
		t.Fatalf("backup-list: %v %v", list, err)
	}
	kinds := []struct {
		verb string
		req  any
		kind error
	}{
		{"backup-show", service.Ref{Ref: "nothing-like-it"}, service.ErrNotFound},
		{"repo-gc", service.Ref{}, service.ErrForbidden},
		{"backup-restore", service.RestoreRequest{Backup: b.ID, Size: 1}, service.ErrUsage},
		{"backup-reset-state", service.ResetStateRequest{Ref: b.ID, State: "error"}, service.ErrForbidden},
		{"quota-update", service.QuotaRequest{Project: "p1", Backups: ptr(int64(0))}, service.ErrForbidden},
		{"backup-create", service.BackupRequest{Volume: "v", Incremental: true, AvailabilityZone: "moon"}, service.ErrUsage},
	}
	for _, k := range kinds {
		err := member.Call(ctx, k.verb, k.req, nil, nil)
		if !errors.Is(err, k.kind) {
			t.Errorf("%s over HTTP: %v, want kind %v", k.verb, err, k.kind)
		}
	}
	// The admin (noauth admin:admin) sets p1's quota to 1; p1's next backup is over it.
	adm, _ := DialHTTP(e.ts.URL+"/v3", "", "admin", "admin")
	if err := adm.Call(ctx, "quota-update", service.QuotaRequest{Project: "p1", Backups: ptr(int64(1))}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := member.Call(ctx, "backup-create", service.BackupRequest{Volume: "v"}, nil, nil); !errors.Is(err, service.ErrQuotaExceeded) {
		t.Errorf("over quota: %v", err)
	}
	// An admin acts for p1 and sees its backups; a member may not act for another project.
	var as []service.BackupView
	if err := adm.Call(service.WithProject(ctx, "p1"), "backup-list", service.Ref{}, &as, nil); err != nil || len(as) != 1 {
		t.Errorf("admin acting for p1: %v %v", as, err)
	}
	if err := member.Call(service.WithProject(ctx, "p2"), "backup-list", service.Ref{}, &as, nil); !errors.Is(err, service.ErrForbidden) {
		t.Errorf("member acting for p2: %v", err)
	}
	tf, _ := DialHTTP(e.ts.URL, "x", "", "")
	tf.token = "" // what a client that sends none gets
	if err := tf.Call(ctx, "backup-list", service.Ref{}, &as, nil); err == nil || !strings.Contains(err.Error(), "X-Auth-Token") {
		t.Errorf("no token: %v", err)
	}
	if err := adm.Call(ctx, "backup-frobnicate", service.Ref{}, nil, nil); err == nil || !strings.Contains(err.Error(), "another version of volback") {
		t.Errorf("an unknown verb: %v", err)
	}
	gone, _ := DialHTTP("http://127.0.0.1:1", "", "admin", "")
	if err := gone.Call(ctx, "backup-list", service.Ref{}, &as, nil); err == nil || !strings.Contains(err.Error(), "check that it runs") {
		t.Errorf("nobody listening: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestCheckListen: noauth trusts any USER:PROJECT, so without a token
// file serve listens on loopback only, unless volback.toml says noauth.
func TestCheckListen(t *testing.T) {
	var cfg service.Config
	for addr, ok := range map[string]bool{"127.0.0.1:8776": true, "localhost:8776": true, "[::1]:8776": true,
		"0.0.0.0:8776": false, "192.0.2.1:8776": false, ":8776": false, "8776": false} {
		err := CheckListen(cfg, addr)
		if (err == nil) != ok {
			t.Errorf("noauth by default on %s: %v, want ok=%v", addr, err, ok)
		}
		if err != nil && addr != "8776" && !strings.Contains(err.Error(), "token_file") {
			t.Errorf("refusal on %s does not say what to do: %v", addr, err)
		}
	}
	cfg.API.TokenFile = "/etc/volback/tokens"
	if err := CheckListen(cfg, "0.0.0.0:8776"); err != nil {
		t.Errorf("with a token file: %v", err)
	}
	cfg.API = service.APIConfig{AuthStrategy: "noauth"}
	if err := CheckListen(cfg, "0.0.0.0:8776"); err != nil {
		t.Errorf("noauth asked for explicitly: %v", err)
	}
}

// TestAPIConfig: volback.toml's [api] table is checked when read, and a
// relative token_file is in the home.
func TestAPIConfig(t *testing.T) {
	for toml, want := range map[string]string{
		"[api]\njobs = -1\n":                    "api.jobs",
		"[api]\nauth_strategy = \"kerberos\"\n": "noauth",
		"[api]\nauth_strategy = \"tokens\"\n":   "token_file",
		"[api]\nlisten_on = \"x\"\n":            "unknown key",
	} {
		home := t.TempDir()
		os.WriteFile(filepath.Join(home, service.ConfigName), []byte(toml), 0o600)
		if _, err := service.LoadConfig(home); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error mentioning %q", toml, err, want)
		}
	}
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, service.ConfigName), []byte("[api]\ntoken_file = \"tokens\"\nlisten = \"127.0.0.1:9\"\n"), 0o600)
	cfg, err := service.LoadConfig(home)
	if err != nil || cfg.API.TokenFile != filepath.Join(home, "tokens") || cfg.API.Jobs != 4 || cfg.API.Listen != "127.0.0.1:9" {
		t.Errorf("[api]: %+v %v", cfg.API, err)
	}
	if _, err := NewServer(mustOpen(t, cfg), nil); err == nil || !strings.Contains(err.Error(), "token file") {
		t.Errorf("a missing token file: %v", err)
	}
}

func mustOpen(t *testing.T, cfg service.Config) *service.Service {
	t.Helper()
	s, err := service.Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
