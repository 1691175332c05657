package service

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func ptr(v int64) *int64 { return &v }

// TestQuotaRefusalAndUsage: a create over the backups quota is refused
// with Cinder's wording before anything is written; usage counts every
// backup (error ones too) and gigabytes by volume size.
func TestQuotaRefusalAndUsage(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "a.img")
	writeImage(t, img, 3<<20, 1)
	if _, err := s.Manage(ctx, ManageRequest{Name: "a", Source: img}); err != nil {
		t.Fatal(err)
	}
	if q, err := s.ShowQuota(ctx, QuotaRequest{}); err != nil || q.Backups != 10 || q.BackupGigabytes != 1000 {
		t.Fatalf("default quota %+v, %v; want Cinder's 10 backups, 1000 GiB", q, err)
	}
	if _, err := s.UpdateQuota(ctx, QuotaRequest{Project: "admin", Backups: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	before := catalogState(t, s)
	_, err := s.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil)
	if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "Maximum number of backups allowed (2) exceeded") {
		t.Fatalf("third backup with a quota of 2: %v", err)
	}
	if after := catalogState(t, s); after != before {
		t.Errorf("the refused backup changed the catalog")
	}
	u, err := s.QuotaUsage(ctx, QuotaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := []QuotaUsage{{"backups", 2, 0, 2}, {"backup_gigabytes", 2, 0, 1000}}
	if len(u) != 2 || u[0] != want[0] || u[1] != want[1] {
		t.Errorf("usage %+v, want %+v", u, want)
	}
	if _, err := s.UpdateQuota(ctx, QuotaRequest{Backups: ptr(1)}); !errors.Is(err, ErrInvalidState) {
		t.Errorf("lowering the quota below usage: %v, want refused", err)
	}
	if _, err := s.UpdateQuota(ctx, QuotaRequest{BackupGigabytes: ptr(1)}); !errors.Is(err, ErrInvalidState) {
		t.Errorf("lowering the gigabytes quota below usage: %v, want refused", err)
	}
	if _, err := s.UpdateQuota(as("admin", RoleMember), QuotaRequest{Backups: ptr(50)}); !errors.Is(err, ErrForbidden) {
		t.Errorf("quota-update by a member: %v, want forbidden", err)
	}
	if _, err := s.QuotaUsage(as("p1", RoleMember), QuotaRequest{Project: "admin"}); !errors.Is(err, ErrForbidden) {
		t.Errorf("a member reading another project's usage: %v, want forbidden", err)
	}
	// gigabytes: a 3 MiB volume counts 1 GiB per backup
	if _, err := s.UpdateQuota(ctx, QuotaRequest{Backups: ptr(-1), BackupGigabytes: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "a"}, nil); !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "Requested 1G, quota is 2G and 2G has been consumed") {
		t.Errorf("backup over the gigabytes quota: %v", err)
	}
}

// TestQuotaReservationsUnderConcurrency: four creates at once with room
// for two: exactly two run, and usage never exceeds the limit.
func TestQuotaReservationsUnderConcurrency(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	dir := t.TempDir()
	for i, n := range []string{"a", "b", "c", "d"} {
		img := filepath.Join(dir, n+".img")
		writeImage(t, img, 2<<20, uint64(i))
		if _, err := s.Manage(ctx, ManageRequest{Name: n, Source: img}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UpdateQuota(ctx, QuotaRequest{Backups: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, n := range []string{"a", "b", "c", "d"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.CreateBackup(ctx, BackupRequest{Volume: n}, nil)
		}()
	}
	wg.Wait()
	ok, refused := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrQuotaExceeded):
			refused++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	bs, _ := s.ListBackups(ctx, "", false)
	if ok != 2 || refused != 2 || len(bs) != 2 {
		t.Errorf("%d created, %d refused, %d backups listed; want 2, 2, 2", ok, refused, len(bs))
	}
}
