// Package ceph finds the throwaway test cluster that start.sh (beside this
// file) started, for tests built with the ceph tag.
//
// A test calls Cluster(t). Without a cluster (no VOLBACK_CEPH_CONF in the
// environment, as in a plain `go test`) the test skips, saying how to get
// one; with VOLBACK_CEPH_REQUIRED=1 (set by the Makefile) it fails instead,
// so `make test` can never pass without running the Ceph tests.
package ceph

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Env is the cluster as start.sh's env file describes it.
type Env struct {
	Dir     string // the cluster's directory (pid files in Dir/run)
	Conf    string // its ceph.conf
	User    string // client id with every capability ("admin")
	Pool    string // pool for repository tests; each test uses its own namespace
	RBDPool string // pool initialised for RBD images
}

// Cluster returns the test cluster, or skips (fails when required) if
// there is none. The test holds a shared lock on the cluster until it
// ends, so Disrupt can wait for tests in other packages to finish.
func Cluster(t testing.TB) Env {
	t.Helper()
	e := find(t)
	lock(t, e, syscall.LOCK_SH)
	return e
}

// Disrupt is for tests that pause or stop a daemon: it waits until no test
// of another package uses the cluster and keeps them out until t ends.
// Call it instead of Cluster, from a test that holds no Cluster lock (a
// flock held by this process would make it wait for itself).
func Disrupt(t testing.TB) Env {
	t.Helper()
	e := find(t)
	lock(t, e, syscall.LOCK_EX)
	return e
}

func find(t testing.TB) Env {
	t.Helper()
	e := Env{
		Dir:     os.Getenv("VOLBACK_CEPH_DIR"),
		Conf:    os.Getenv("VOLBACK_CEPH_CONF"),
		User:    os.Getenv("VOLBACK_CEPH_USER"),
		Pool:    os.Getenv("VOLBACK_CEPH_POOL"),
		RBDPool: os.Getenv("VOLBACK_CEPH_RBD_POOL"),
	}
	if e.Conf == "" || e.Dir == "" || e.Pool == "" {
		const how = "no Ceph test cluster: run `make test`, or `integration/ceph/start.sh start DIR && . DIR/env` first"
		if os.Getenv("VOLBACK_CEPH_REQUIRED") == "1" {
			t.Fatal(how + " (VOLBACK_CEPH_REQUIRED=1: the Ceph tests must run)")
		}
		t.Skip(how)
	}
	if _, err := os.Stat(e.Conf); err != nil {
		t.Fatalf("Ceph test cluster: %v (is the cluster in %s still there? start it again with integration/ceph/start.sh start %s)", err, e.Dir, e.Dir)
	}
	return e
}

// OSDPid is the PID of the cluster's OSD, from its pid file.
func (e Env) OSDPid(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.Dir, "run", "osd.0.pid"))
	if err != nil {
		t.Fatalf("read the OSD's pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("OSD pid file: %v", err)
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if !strings.Contains(string(cmdline), e.Conf) {
		t.Fatalf("pid %d is not this cluster's OSD (cmdline %q)", pid, cmdline)
	}
	return pid
}

// lock takes a flock on the cluster's tests.lock for the rest of t.
func lock(t testing.TB, e Env, how int) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(e.Dir, "tests.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("Ceph test cluster lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		t.Fatalf("Ceph test cluster lock: %v", err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the flock
}
