package service

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/index"
)

func setVolume(t *testing.T, s *Service, ref string, change func(*index.Volume)) {
	t.Helper()
	if err := s.update(func(tx *index.Tx) error {
		v, err := findVolume(tx, caller(context.Background()), ref)
		if err != nil {
			return err
		}
		change(v)
		return tx.PutVolume(v)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestServiceRefusals: each refusal names the thing and the fix, and
// leaves the catalog exactly as it was.
func TestServiceRefusals(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	writeImage(t, img, 1<<20, 9)
	if _, err := s.Manage(ctx, ManageRequest{Name: "vol", Source: img}); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Name: "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A volume rebuilt from a backup record: its source is unknown.
	if err := s.update(func(tx *index.Tx) error {
		return tx.PutVolume(&index.Volume{ID: "11111111-2222-3333-4444-555555555555", Name: "placeholder",
			Status: index.StatusAvailable, Size: 1 << 30, Placeholder: true, CreatedAt: now()})
	}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		setup func()
		do    func() error
		words []string
	}{
		{"manage an already managed source", nil, func() error {
			_, err := s.Manage(ctx, ManageRequest{Name: "again", Source: img})
			return err
		}, []string{"already managed", "vol"}},
		{"unknown availability zone", nil, func() error {
			_, err := s.CreateVolume(ctx, CreateRequest{Name: "n", Size: 1 << 20, AvailabilityZone: "mars"}, nil)
			return err
		}, []string{"mars", "not configured", "nova"}},
		{"create of size 0", nil, func() error {
			_, err := s.CreateVolume(ctx, CreateRequest{Name: "n"}, nil)
			return err
		}, []string{"SIZE must be positive"}},
		{"backup of a volume being restored", func() {
			setVolume(t, s, "vol", func(v *index.Volume) { v.Status = index.StatusRestoringBackup })
		}, func() error {
			_, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
			return err
		}, []string{"restoring-backup", "available or in-use"}},
		{"delete of a busy volume", nil, func() error {
			_, err := s.DeleteVolume(ctx, "vol")
			return err
		}, []string{"restoring-backup", "wait"}},
		{"restore over a busy volume", nil, func() error {
			_, err := s.Restore(ctx, RestoreRequest{Backup: b.ID, Volume: "vol"}, nil)
			return err
		}, []string{"restoring-backup", "must be available"}},
		{"backup of a placeholder volume", nil, func() error {
			_, err := s.CreateBackup(ctx, BackupRequest{Volume: "placeholder"}, nil)
			return err
		}, []string{"no known source"}},
		{"restore over a placeholder volume", nil, func() error {
			_, err := s.Restore(ctx, RestoreRequest{Backup: b.ID, Volume: "placeholder"}, nil)
			return err
		}, []string{"no known source", "new volume"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			before := catalogState(t, s)
			err := tc.do()
			if err == nil {
				t.Fatal("not refused")
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if after := catalogState(t, s); after != before {
				t.Errorf("the refusal changed the catalog")
			}
		})
	}

	// Backups that are not available can be neither restored nor deleted.
	if err := s.setBackupStatus(b.ID, index.StatusRestoring); err != nil {
		t.Fatal(err)
	}
	before := catalogState(t, s)
	if _, err := s.Restore(ctx, RestoreRequest{Backup: b.ID}, nil); err == nil || !strings.Contains(err.Error(), "only available backups") {
		t.Errorf("restore of a restoring backup: %v", err)
	}
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.ID}}); err == nil || !strings.Contains(err.Error(), "only available, error or error_deleting") {
		t.Errorf("delete of a restoring backup: %v", err)
	}
	if catalogState(t, s) != before {
		t.Error("refused restore or delete changed the catalog")
	}
}
