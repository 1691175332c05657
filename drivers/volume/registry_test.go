package volume

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/volback/volback/drivers/plugins"
)

// noDriver serves nothing; only its identity matters here.
type noDriver struct{ Driver }

// TestLookupLoadsThePluginOfItsScheme: an rbd:// locator with no driver
// registered loads the Ceph plugin, whose init registers the driver (here
// a fake plugin.Open does; the integration tests load the real plugin).
func TestLookupLoadsThePluginOfItsScheme(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(plugins.DirEnv, dir)
	rbd := noDriver{}
	saved := plugins.Open
	plugins.Open = func(string) error {
		Register("rbd", rbd)
		return nil
	}
	t.Cleanup(func() {
		plugins.Open = saved
		mu.Lock()
		delete(drivers, "rbd")
		mu.Unlock()
	})
	if !slices.Contains(Schemes(), "rbd://") {
		t.Fatalf("Schemes() = %v, want rbd:// (served by a plugin)", Schemes())
	}
	_, err := Lookup("rbd://pool/img")
	if err == nil || !strings.Contains(err.Error(), `volume "rbd://pool/img"`) || !strings.Contains(err.Error(), "volback-ceph.so") {
		t.Fatalf("Lookup without the plugin: %v, want the locator and the missing plugin named", err)
	}
	if err := Available("rbd"); err == nil || !strings.Contains(err.Error(), "volback-ceph.so") {
		t.Fatalf("Available without the plugin: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "volback-ceph.so"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if d, err := Lookup("rbd://pool/img"); err != nil || d != rbd {
		t.Fatalf("Lookup with the plugin: %v, %v, want the plugin's driver", d, err)
	}
	if err := Available("rbd"); err != nil {
		t.Fatalf("Available with the plugin: %v", err)
	}
}
