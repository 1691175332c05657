package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCephPluginOnlyWhenUsed: librados and librbd come with the Ceph plugin
// (volback-ceph.so beside the binary), opened the first time a rados:// or
// rbd:// locator is used. An owner that backs up and restores image files
// never maps them; a binary without its plugin refuses Ceph locators,
// naming the plugin and the fix, and registers nothing.
func TestCephPluginOnlyWhenUsed(t *testing.T) {
	home := newHome(t)
	owner := start(t, home, "serve")
	eventually(t, "serve's socket", func() bool { return exists(socketPath(home)) })
	img := filepath.Join(t.TempDir(), "disk.img")
	randomFile(t, img, 4*mib, 31)
	manage(t, home, "d", img)
	var b Backup
	runJSON(t, home, &b, "backup-create", "d")
	var r Restore
	runJSON(t, home, &r, "backup-restore", "--name", "r", "--path", filepath.Join(t.TempDir(), "r.img"), b.ID)
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", owner.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, lib := range []string{"librados", "librbd", "volback-ceph.so"} {
		if strings.Contains(string(maps), lib) {
			t.Errorf("the owner mapped %s for a file volume and a file:// repository", lib)
		}
	}

	// The same binary alone in a directory (no plugin there or in ../lib/volback).
	lone := filepath.Join(t.TempDir(), "volback")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lone, data, 0o755); err != nil {
		t.Fatal(err)
	}
	home2 := newHome(t)
	refused := func(args ...string) {
		t.Helper()
		cmd := exec.Command(lone, append([]string{"--home", home2}, args...)...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		for _, want := range []string{"volback-ceph.so", filepath.Dir(lone), "make build"} {
			if err == nil || !strings.Contains(string(out), want) {
				t.Fatalf("volback %s without its plugin: %v: %s, want a refusal naming %q", strings.Join(args, " "), err, out, want)
			}
		}
	}
	refused("manage", "--name", "c", "rbd://rbd/img")
	writeConf(t, home2, "[zones.nova]\nrepository = \"rados://volback?conf=/nonexistent/ceph.conf\"\n")
	refused("repo-check")
	var vols []Volume
	runJSON(t, home2, &vols, "list")
	if len(vols) != 0 {
		t.Fatalf("refusals registered volumes: %+v", vols)
	}
}
