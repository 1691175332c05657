package plugins

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeOpen stands in for plugin.Open (the volback binary's; the integration
// tests load the real plugin): it records the paths and answers err.
func fakeOpen(t *testing.T, err error) *[]string {
	t.Helper()
	var opened []string
	saved := Open
	Open = func(path string) error {
		opened = append(opened, path)
		return err
	}
	t.Cleanup(func() {
		Open = saved
		mu.Lock()
		clear(loaded)
		mu.Unlock()
	})
	return &opened
}

func TestNoSchemesWithoutOpen(t *testing.T) {
	if Open != nil {
		t.Fatal("Open is set in a test binary; only cmd/volback sets it")
	}
	if Serves("rados") || Serves("rbd") || len(Schemes()) != 0 {
		t.Fatalf("Serves or Schemes answer without Open: %v", Schemes())
	}
	if err := Load("rbd"); err == nil || !strings.Contains(err.Error(), `"rbd"`) {
		t.Fatalf("Load without Open: %v, want a refusal naming the scheme", err)
	}
}

func TestLoadFindsThePluginOnce(t *testing.T) {
	opened := fakeOpen(t, nil)
	dir := t.TempDir()
	t.Setenv(DirEnv, dir)
	if err := Load("file"); err == nil || len(*opened) != 0 {
		t.Fatalf("Load of a scheme no plugin serves: %v, opened %v", err, *opened)
	}
	err := Load("rados")
	for _, want := range []string{"rados:// and rbd://", "volback-ceph.so", dir, "make build", "make install"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Load with no plugin anywhere: %v, want it to name %q", err, want)
		}
	}
	if len(*opened) != 0 {
		t.Fatalf("opened %v with no plugin present", *opened)
	}
	path := filepath.Join(dir, "volback-ceph.so")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Found now (a failed search is not remembered), once for both schemes.
	for _, scheme := range []string{"rados", "rbd", "rados"} {
		if err := Load(scheme); err != nil {
			t.Fatalf("Load(%q) with the plugin in %s: %v", scheme, DirEnv, err)
		}
	}
	if len(*opened) != 1 || (*opened)[0] != path {
		t.Fatalf("opened %v, want %s once", *opened, path)
	}
	if got := strings.Join(Schemes(), ","); got != "rados,rbd" {
		t.Fatalf("Schemes() = %s", got)
	}
}

func TestLoadSaysWhyThePluginDidNotOpen(t *testing.T) {
	opened := fakeOpen(t, errors.New("librados.so.2: cannot open shared object file"))
	dir := t.TempDir()
	t.Setenv(DirEnv, dir)
	path := filepath.Join(dir, "volback-ceph.so")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		err := Load("rbd")
		for _, want := range []string{path, "librados.so.2", "apt install librados2 librbd1", "make build"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Load of a plugin that does not open: %v, want it to name %q", err, want)
			}
		}
	}
	if len(*opened) != 2 {
		t.Fatalf("opened %v, want a second try after a failure", *opened)
	}
}

func TestDirs(t *testing.T) {
	t.Setenv(DirEnv, "/opt/vb")
	dirs := Dirs()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ = filepath.EvalSymlinks(exe)
	want := []string{"/opt/vb", filepath.Dir(exe), filepath.Join(filepath.Dir(filepath.Dir(exe)), "lib", "volback")}
	if strings.Join(dirs, "|") != strings.Join(want, "|") {
		t.Fatalf("Dirs() = %v, want %v", dirs, want)
	}
}
