package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volback/volback/index"
)

func heartbeatOf(t *testing.T, cat *index.Catalog, zone string) time.Time {
	t.Helper()
	var st index.Service
	if err := cat.View(func(tx *index.Tx) (err error) { st, _, err = tx.ServiceState(backupBinary, zone); return err }); err != nil {
		t.Fatal(err)
	}
	return st.Heartbeat
}

func homeWithConfig(t *testing.T, conf string) string {
	t.Helper()
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ConfigName), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return home
}

// TestHeartbeat: the owner records each zone's heartbeat every
// report_interval with nobody running service-list, and stops at Close.
func TestHeartbeat(t *testing.T) {
	home := homeWithConfig(t, "report_interval = \"40ms\"\nservice_down_time = \"10s\"\n")
	cfg, err := LoadConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReportInterval != 40*time.Millisecond || cfg.ServiceDownTime != 10*time.Second {
		t.Fatalf("report_interval %v, service_down_time %v", cfg.ReportInterval, cfg.ServiceDownTime)
	}
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.StartHeartbeat()
	s.StartHeartbeat() // a second call starts no second loop
	<-s.hb.first
	first := heartbeatOf(t, s.cat, "nova")
	if first.IsZero() {
		t.Fatal("no heartbeat after the owner's first check")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !heartbeatOf(t, s.cat, "nova").After(first) {
		if time.Now().After(deadline) {
			t.Fatalf("heartbeat still %v after 5s with a 40ms report_interval", first)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rows, err := s.ListServices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := rows[0]; r.Binary != backupBinary || r.State != "up" || r.UpdatedAt == nil || r.UpdatedAt.Before(first) {
		t.Errorf("service-list row %+v, want up with the latest heartbeat", r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cat, err := index.Open(filepath.Join(home, "catalog"), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	last := heartbeatOf(t, cat, "nova")
	time.Sleep(200 * time.Millisecond)
	if got := heartbeatOf(t, cat, "nova"); !got.Equal(last) {
		t.Errorf("heartbeat moved from %v to %v after Close", last, got)
	}
}

// TestNoHeartbeatOwner: an owner that runs no heartbeat (a command that
// owns the catalog for its own run) records none by itself, and its
// service-list checks the zones then, so it shows them as they are now,
// not down for want of a heartbeat.
func TestNoHeartbeatOwner(t *testing.T) {
	s := newService(t)
	time.Sleep(100 * time.Millisecond)
	if hb := heartbeatOf(t, s.cat, "nova"); !hb.IsZero() {
		t.Fatalf("heartbeat %v recorded by an owner that runs none", hb)
	}
	before := now()
	rows, err := s.ListServices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := rows[0]; r.Binary != backupBinary || r.State != "up" || r.UpdatedAt == nil || r.UpdatedAt.Before(before) {
		t.Errorf("service-list row %+v, want up, checked by this call (at or after %v)", r, before)
	}
}

// TestServiceListStaleHeartbeat: a zone whose last heartbeat is older than
// service_down_time shows down, saying so, even though its repository
// would answer.
func TestServiceListStaleHeartbeat(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	s.StartHeartbeat()
	<-s.hb.first
	old := now().Add(-2 * DefaultServiceDownTime)
	err := s.update(func(tx *index.Tx) error {
		st, _, err := tx.ServiceState(backupBinary, "nova")
		if err != nil {
			return err
		}
		st.Heartbeat = old
		return tx.PutServiceState(st)
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.ListServices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := rows[0]
	if r.Binary != backupBinary || r.State != "down" || r.Reason == nil || !strings.Contains(*r.Reason, "service_down_time") || r.UpdatedAt == nil || !r.UpdatedAt.Equal(old) {
		t.Errorf("service-list row with a stale heartbeat %+v, want down saying why, updated_at the last heartbeat", r)
	}
}

// TestHeartbeatConfigRefusals: report_interval and service_down_time must
// be positive durations, service_down_time the longer.
func TestHeartbeatConfigRefusals(t *testing.T) {
	for conf, want := range map[string]string{
		"report_interval = \"soon\"\n":                           "report_interval",
		"service_down_time = \"-1s\"\n":                          "service_down_time",
		"report_interval = \"1m\"\nservice_down_time = \"1m\"\n": "must be longer than report_interval",
	} {
		if _, err := LoadConfig(homeWithConfig(t, conf)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: %v, want refused naming %q", conf, err, want)
		}
	}
}
