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

// TestImportCountsAgainstQuota: backup-import reserves one backup and the
// record's size, as Cinder's import_record does: over either quota it is
// refused naming the quota and how to raise it, changing nothing, and
// goes through once an admin raises the quota.
func TestImportCountsAgainstQuota(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s) // three backups of a 3 MiB volume: 1 GiB each by Cinder's count
	s = loseCatalog(t, s)
	imp := func(i int) error {
		_, err := s.ImportBackup(ctx, ImportRequest{BackupService: "volback.drivers.posix", BackupURL: c.urls[i]})
		return err
	}
	if _, err := s.UpdateQuota(ctx, QuotaRequest{Project: "admin", Backups: ptr(1)}); err != nil {
		t.Fatal(err)
	}
	if err := imp(0); err != nil {
		t.Fatal(err)
	}
	before := catalogState(t, s)
	err := imp(1)
	if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "Maximum number of backups allowed (1) exceeded") || !strings.Contains(err.Error(), "quota-update --backups") {
		t.Fatalf("import over the backups quota: %v", err)
	}
	if catalogState(t, s) != before {
		t.Error("an import refused over quota changed the catalog")
	}
	if _, err := s.UpdateQuota(ctx, QuotaRequest{Project: "admin", Backups: ptr(-1), BackupGigabytes: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	if err := imp(1); err != nil {
		t.Fatalf("import after raising the backups quota: %v", err)
	}
	err = imp(2)
	if !errors.Is(err, ErrQuotaExceeded) || !strings.Contains(err.Error(), "Backup gigabytes quota") || !strings.Contains(err.Error(), "quota-update --backup-gigabytes") {
		t.Fatalf("import over the gigabytes quota: %v", err)
	}
	if u, err := s.QuotaUsage(ctx, QuotaRequest{}); err != nil || u[0].InUse != 2 || u[0].Reserved != 0 {
		t.Errorf("quota usage after two imports and a refusal: %+v, %v", u, err)
	}
}

// TestConcurrentImportsRespectQuota: imports racing for the last backup
// of a quota: exactly one gets it (the reservation is in the transaction
// that writes the record), the others are refused over quota.
func TestConcurrentImportsRespectQuota(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s)
	s = loseCatalog(t, s)
	if _, err := s.UpdateQuota(ctx, QuotaRequest{Project: "admin", Backups: ptr(1)}); err != nil {
		t.Fatal(err)
	}
	errs := make([]error, len(c.urls))
	var wg sync.WaitGroup
	for i, u := range c.urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.ImportBackup(ctx, ImportRequest{BackupService: "volback.drivers.posix", BackupURL: u})
		}()
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrQuotaExceeded):
			t.Errorf("import %d: %v, want success or over quota", i, err)
		}
	}
	if bs, _ := s.ListBackups(ctx, "", false); ok != 1 || len(bs) != 1 {
		t.Errorf("%d imports succeeded, %d backups in the catalog; want exactly one of each under a quota of 1", ok, len(bs))
	}
}
