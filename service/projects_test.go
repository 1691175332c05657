package service

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func as(project, role string) context.Context {
	return WithIdentity(context.Background(), Identity{UID: 1000, Project: project, Role: role})
}

// TestProjectIsolation: a member sees and touches only its project's
// volumes and backups; a foreign id is "not found" and changes nothing;
// an admin sees all with all-projects, and a backup it makes of another
// project's volume belongs to that project.
func TestProjectIsolation(t *testing.T) {
	s := newService(t)
	dir := t.TempDir()
	p1, p2, admin := as("p1", RoleMember), as("p2", RoleMember), context.Background()
	img := filepath.Join(dir, "a.img")
	writeImage(t, img, 1<<20, 1)
	v, err := s.Manage(p1, ManageRequest{Name: "a", Source: img})
	if err != nil {
		t.Fatal(err)
	}
	if v.ProjectID != "p1" {
		t.Fatalf("volume managed by a member of p1 has project %q", v.ProjectID)
	}
	b, err := s.CreateBackup(p1, BackupRequest{Volume: "a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := catalogState(t, s)

	for name, f := range map[string]func() error{
		"show":           func() error { _, err := s.ShowVolume(p2, v.ID); return err },
		"show by name":   func() error { _, err := s.ShowVolume(p2, "a"); return err },
		"backup-show":    func() error { _, err := s.ShowBackup(p2, b.ID); return err },
		"backup-create":  func() error { _, err := s.CreateBackup(p2, BackupRequest{Volume: v.ID}, nil); return err },
		"backup-delete":  func() error { _, err := s.DeleteBackups(p2, DeleteRequest{Refs: []string{b.ID}}); return err },
		"backup-restore": func() error { _, err := s.Restore(p2, RestoreRequest{Backup: b.ID}, nil); return err },
		"delete":         func() error { _, err := s.DeleteVolume(p2, v.ID); return err },
		"backup-export":  func() error { _, err := s.ExportBackup(p2, b.ID); return err },
	} {
		if err := f(); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s of p1's resource by p2: got %v, want not found", name, err)
		}
	}
	if after := catalogState(t, s); after != before {
		t.Errorf("refused requests changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
	if vs, _ := s.ListVolumes(p2, true); len(vs) != 0 {
		t.Errorf("p2 lists %d volumes, want none (all-projects is ignored for members)", len(vs))
	}
	if bs, _ := s.ListBackups(p2, "", true); len(bs) != 0 {
		t.Errorf("p2 lists %d backups, want none", len(bs))
	}
	if bs, _ := s.ListBackups(p1, "", false); len(bs) != 1 {
		t.Errorf("p1 lists %d backups, want its 1", len(bs))
	}
	if vs, _ := s.ListVolumes(admin, false); len(vs) != 0 {
		t.Errorf("admin without all-projects lists %d volumes of other projects", len(vs))
	}
	if vs, _ := s.ListVolumes(admin, true); len(vs) != 1 {
		t.Errorf("admin with all-projects lists %d volumes, want 1", len(vs))
	}
	ab, err := s.CreateBackup(admin, BackupRequest{Volume: v.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ab.ProjectID != "p1" {
		t.Errorf("admin's backup of p1's volume belongs to %q, want p1", ab.ProjectID)
	}
	if _, err := s.ShowBackup(p1, ab.ID); err != nil {
		t.Errorf("p1 cannot see the backup an admin made of its volume: %v", err)
	}
}

// TestIdentityAndPolicy: [users] maps uids to projects and roles; a
// member cannot act for another project nor call admin-only verbs, and
// an unknown uid is refused.
func TestIdentityAndPolicy(t *testing.T) {
	cfg := Config{Home: "/h", Users: map[string]User{"1000": {Project: "demo", Role: RoleMember}, "1001": {Project: "ops", Role: RoleAdmin}}}
	s := &Service{cfg: cfg}
	ctx, err := s.Authenticate(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if id := caller(ctx); id.Project != "demo" || id.Admin() {
		t.Errorf("uid 1000 is %+v, want a member of demo", id)
	}
	if err := RequireAdmin(ctx, "backup:repo-gc"); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "uid 1000 is a member of project demo") {
		t.Errorf("an admin-only action by a member: %v, want forbidden naming uid 1000", err)
	}
	if _, err := s.Authenticate(WithProject(context.Background(), "ops"), 1000); !errors.Is(err, ErrForbidden) {
		t.Errorf("a member acting for another project: %v, want forbidden", err)
	}
	ctx, err = s.Authenticate(WithProject(context.Background(), "demo"), 1001)
	if err != nil || caller(ctx).Project != "demo" || !caller(ctx).Admin() {
		t.Errorf("an admin acting for demo: %+v, %v", caller(ctx), err)
	}
	if _, err := s.Authenticate(context.Background(), 4242); !errors.Is(err, ErrForbidden) {
		t.Errorf("uid 4242 without an entry: %v, want forbidden", err)
	}
	if ctx, err := s.Authenticate(context.Background(), 0); err != nil || caller(ctx).Project != DefaultProject || !caller(ctx).Admin() {
		t.Errorf("root: %+v, %v; want admin of project admin", caller(ctx), err)
	}
}

// TestErrorKindsCrossTheWire: a kind survives being sent as text.
func TestErrorKindsCrossTheWire(t *testing.T) {
	for _, k := range []error{ErrNotFound, ErrInvalidState, ErrQuotaExceeded, ErrForbidden, ErrUsage} {
		err := errorf(k, "thing %s: why; fix", "x")
		back := KindError(KindOf(err), err.Error())
		if !errors.Is(back, k) || back.Error() != err.Error() {
			t.Errorf("%v: came back as %v (%q)", k, back, KindOf(err))
		}
	}
}
