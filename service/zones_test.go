package service

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/drivers/volume"
)

// TestServiceListAndUnreachableRepository: a zone whose repository is
// gone shows down with the reason, and a backup to it ends `error` with
// that reason in fail_reason, leaving no repository created in its place.
func TestServiceListAndUnreachableRepository(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	manageImage(t, s, "a", 1<<20, 1)
	mustBackup(t, s, "a")
	rows, err := s.ListServices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byBinary := map[string]ServiceView{}
	for _, r := range rows {
		byBinary[r.Binary] = r
	}
	if r := byBinary[backupBinary]; r.State != "up" || r.Status != "enabled" || r.Zone != "nova" || r.UpdatedAt == nil {
		t.Errorf("backup service row %+v, want nova up enabled with a heartbeat", r)
	}
	if _, ok := byBinary[volumeBinary]; !ok {
		t.Error("no volume driver row")
	}
	if _, ok := byBinary[catalogBinary]; !ok {
		t.Error("no catalog owner row")
	}
	repoDir := filepath.Join(s.cfg.Home, "repository")
	if err := os.Rename(repoDir, repoDir+".away"); err != nil { // the NFS export is not mounted
		t.Fatal(err)
	}
	s.Close() // drop opened repositories, as a new owner would start
	s2, err := Open(ctx, s.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	rows, _ = s2.ListServices(ctx)
	for _, r := range rows {
		if r.Binary == backupBinary && (r.State != "down" || r.Reason == nil || !strings.Contains(*r.Reason, "does not exist")) {
			t.Errorf("unreachable repository's row %+v, want down with the reason", r)
		}
	}
	_, err = s2.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("backup to an unreachable repository: %v", err)
	}
	bs, _ := s2.ListBackups(ctx, "", false)
	if len(bs) != 2 || bs[0].Status != "error" || bs[0].FailReason == nil || !strings.Contains(*bs[0].FailReason, "unreachable") {
		t.Errorf("newest backup %+v, want error with the reason", bs[0])
	}
	if _, err := os.Stat(repoDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a repository was made in place of the unreachable one: %v", err)
	}
	if _, err := s2.DeleteBackups(ctx, DeleteRequest{Refs: []string{bs[0].ID}}); err != nil {
		t.Errorf("deleting the error backup that never reached a repository: %v", err)
	}
}

// TestServiceDisable: a disabled zone takes no new backups or restores,
// members cannot change services, and enabling lets work in again.
func TestServiceDisable(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	manageImage(t, s, "a", 1<<20, 1)
	b := mustBackup(t, s, "a")
	if _, err := s.SetServiceEnabled(ctx, ServiceRequest{Zone: "nova", Reason: "maintenance"}, false); err != nil {
		t.Fatal(err)
	}
	before := catalogState(t, s)
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil); !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), "maintenance") {
		t.Errorf("backup in a disabled zone: %v", err)
	}
	if _, err := s.Restore(ctx, RestoreRequest{Backup: b.ID}, nil); !errors.Is(err, ErrInvalidState) {
		t.Errorf("restore from a disabled zone: %v", err)
	}
	if catalogState(t, s) != before {
		t.Error("refusals in a disabled zone changed the catalog")
	}
	rows, _ := s.ListServices(ctx)
	if rows[0].Status != "disabled" || rows[0].DisabledReason == nil || *rows[0].DisabledReason != "maintenance" {
		t.Errorf("service-list row %+v, want disabled (maintenance)", rows[0])
	}
	if _, err := s.SetServiceEnabled(ctx, ServiceRequest{Zone: "nova"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil); err != nil {
		t.Errorf("backup after service-enable: %v", err)
	}
}

// TestBackupToAnotherZone: backup-create --availability-zone writes to
// that zone's repository, and create --availability-zone --backup-id
// restores it into a volume of a third zone's choosing.
func TestBackupToAnotherZone(t *testing.T) {
	home := t.TempDir()
	conf := "[zones.far]\nrepository = \"file://" + filepath.Join(home, "far") + "\"\n"
	if err := os.WriteFile(filepath.Join(home, ConfigName), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "a.img")
	want := writeImage(t, img, 2<<20, 1)
	s.Manage(ctx, ManageRequest{Name: "a", Source: img})
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "a", AvailabilityZone: "far"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.AvailabilityZone != "far" || !strings.Contains(b.Container, filepath.Join(home, "far")) {
		t.Errorf("backup to zone far: zone %s, container %s", b.AvailabilityZone, b.Container)
	}
	if _, err := os.Stat(filepath.Join(home, "repository")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the volume's own zone got a repository: %v", err)
	}
	v, err := s.CreateVolume(ctx, CreateRequest{Name: "copy", BackupID: b.ID, AvailabilityZone: "nova"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(v.Path)
	if v.AvailabilityZone != "nova" || !bytes.Equal(got, want) {
		t.Errorf("restore into zone nova: zone %s, bytes equal %v", v.AvailabilityZone, bytes.Equal(got, want))
	}
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "a", AvailabilityZone: "nowhere"}, nil); !errors.Is(err, ErrUsage) {
		t.Errorf("backup to an unknown zone: %v", err)
	}
}

// TestServiceListDriverAvailability: a volume driver that cannot serve in
// this build (rbd without the ceph tag) shows down with the reason and
// how to rebuild; one that can shows up.
func TestServiceListDriverAvailability(t *testing.T) {
	s := newService(t)
	rows, err := s.ListServices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var rbd, file *ServiceView
	for i, r := range rows {
		switch {
		case r.Binary == volumeBinary && strings.HasSuffix(r.Host, "@rbd"):
			rbd = &rows[i]
		case r.Binary == volumeBinary && strings.HasSuffix(r.Host, "@file"):
			file = &rows[i]
		}
	}
	if rbd == nil || file == nil {
		t.Fatalf("service-list %+v: want rows for the rbd and file volume drivers", rows)
	}
	if file.State != "up" || file.Reason != nil {
		t.Errorf("file driver row %+v, want up", *file)
	}
	if avail := volume.Available("rbd"); avail == nil {
		if rbd.State != "up" || rbd.Reason != nil {
			t.Errorf("rbd driver row in a Ceph build %+v, want up", *rbd)
		}
	} else if rbd.State != "down" || rbd.Reason == nil || !strings.Contains(*rbd.Reason, "-tags ceph,pacific") {
		t.Errorf("rbd driver row without Ceph support %+v, want down with how to rebuild", *rbd)
	}
}
