package service

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestZoneVolumesLocation: a zone's new volumes, empty or restored, are
// created where its volumes setting says; a bad setting is refused when
// the config is read.
func TestZoneVolumesLocation(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	vols := filepath.Join(t.TempDir(), "z2-volumes")
	conf := `[zones.z2]
repository = "file://` + filepath.Join(home, "repo2") + `"
volumes = "` + vols + `"
`
	if err := os.WriteFile(filepath.Join(home, ConfigName), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Workers = 2
	s, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	v, err := s.CreateVolume(ctx, CreateRequest{Name: "new", AvailabilityZone: "z2", Size: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(vols, v.ID+".img"); v.Path != want {
		t.Errorf("new volume of zone z2 at %s, want %s (the zone's volumes directory)", v.Path, want)
	}
	img := filepath.Join(t.TempDir(), "src.img")
	data := writeImage(t, img, 4<<20, 3)
	if _, err := s.Manage(ctx, ManageRequest{Name: "src", Source: img}); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "src"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := s.Restore(ctx, RestoreRequest{Backup: b.ID, AvailabilityZone: "z2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	restored, err := s.ShowVolume(ctx, rv.VolumeID)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(restored.Path) != vols {
		t.Errorf("restore to a new volume of zone z2 at %s, want it in %s", restored.Path, vols)
	}
	if got, _ := os.ReadFile(restored.Path); !bytes.Equal(got, data) {
		t.Error("the restored volume differs from the source")
	}
	if def, err := s.CreateVolume(ctx, CreateRequest{Name: "default", Size: 1 << 20}, nil); err != nil || filepath.Dir(def.Path) != filepath.Join(home, "volumes") {
		t.Errorf("a zone without a volumes setting puts new volumes at %v (%v), want under the home", def, err)
	}

	bad := `[zones.z3]
repository = "file:///tmp/x"
volumes = "relative/dir"
`
	if err := os.WriteFile(filepath.Join(home, ConfigName), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(home); err == nil || !strings.Contains(err.Error(), "z3") || !strings.Contains(err.Error(), "relative/dir") {
		t.Fatalf("a relative volumes directory: %v, want a refusal naming the zone and the setting", err)
	}
}
