package repo

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/volback/volback/drivers/plugins"
)

// TestOpenLoadsThePluginOfItsScheme: a rados:// URL with no driver
// registered loads the Ceph plugin, whose init registers the driver (here
// a fake plugin.Open does; the integration tests load the real plugin).
func TestOpenLoadsThePluginOfItsScheme(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(plugins.DirEnv, dir)
	saved := plugins.Open
	plugins.Open = func(string) error {
		Register("rados", func(context.Context, *url.URL, bool) (Backend, error) {
			return nil, errors.New("the plugin's driver")
		})
		return nil
	}
	t.Cleanup(func() {
		plugins.Open = saved
		mu.Lock()
		delete(drivers, "rados")
		mu.Unlock()
	})
	if !slices.Contains(Schemes(), "rados://") {
		t.Fatalf("Schemes() = %v, want rados:// (served by a plugin)", Schemes())
	}
	_, err := Open(context.Background(), "rados://pool", false)
	if err == nil || !strings.Contains(err.Error(), `repository URL "rados://pool"`) || !strings.Contains(err.Error(), "volback-ceph.so") {
		t.Fatalf("Open without the plugin: %v, want the URL and the missing plugin named", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "volback-ceph.so"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), "rados://pool", false); err == nil || err.Error() != "the plugin's driver" {
		t.Fatalf("Open with the plugin: %v, want the plugin's driver to answer", err)
	}
	if _, err := Open(context.Background(), "s3://bucket", false); err == nil || !strings.Contains(err.Error(), `no driver for scheme "s3"`) {
		t.Fatalf("Open of a scheme nobody serves: %v", err)
	}
}
