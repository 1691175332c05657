package service

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

func volumes(t *testing.T, s *Service) []VolumeView {
	t.Helper()
	vs, err := s.ListVolumes(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestReattachAfterRebuild: after catalog-rebuild the volume is a
// placeholder; managing its source by --id, or by its name, attaches the
// source to it (no second volume) and --incremental finds the parent.
func TestReattachAfterRebuild(t *testing.T) {
	for _, by := range []string{"id", "name"} {
		t.Run(by, func(t *testing.T) {
			ctx := context.Background()
			s := newService(t)
			c := makeChain(t, s)
			before := volumes(t, s)[0]
			s = loseCatalog(t, s)
			if _, err := s.RebuildCatalog(ctx, RebuildRequest{}); err != nil {
				t.Fatal(err)
			}
			img := before.Path
			req := ManageRequest{Source: img}
			if by == "id" {
				req.ID = before.ID
			} else {
				req.Name = "vol"
			}
			v, err := s.Manage(ctx, req)
			if err != nil {
				t.Fatalf("manage %s onto the placeholder: %v", by, err)
			}
			if v.ID != before.ID || v.Path != img || v.Driver != "file" || v.Status != index.StatusAvailable {
				t.Fatalf("manage by %s gave %+v, want volume %s with source %s", by, v, before.ID, img)
			}
			if n := len(volumes(t, s)); n != 1 {
				t.Fatalf("%d volumes after reattaching, want 1", n)
			}
			inc, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
			if err != nil {
				t.Fatalf("incremental after reattaching: %v", err)
			}
			if inc.ParentID == nil || *inc.ParentID != c.ids[2] || inc.VolumeID != before.ID {
				t.Fatalf("incremental after reattaching: parent %v volume %s, want parent %s volume %s", inc.ParentID, inc.VolumeID, c.ids[2], before.ID)
			}
			// A deleted reattached volume keeps its source: volback did not create it.
			if _, err := s.DeleteVolume(ctx, before.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(img); err != nil {
				t.Fatalf("deleting the reattached volume removed its source: %v", err)
			}
		})
	}
}

// TestReattachRefusals: --id of a volume with a live source, a name that
// is not the volume's, two source-less volumes of one name, a busy one.
func TestReattachRefusals(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	dir := t.TempDir()
	live, other := filepath.Join(dir, "live.img"), filepath.Join(dir, "other.img")
	writeImage(t, live, 1<<20, 1)
	writeImage(t, other, 1<<20, 2)
	lv, err := s.Manage(ctx, ManageRequest{Name: "live", Source: live})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"11111111-0000-0000-0000-000000000001", "11111111-0000-0000-0000-000000000002"} {
		s.update(func(tx *index.Tx) error {
			return tx.PutVolume(&index.Volume{ID: id, Name: "twin", Status: index.StatusAvailable, Size: 1 << 20,
				Placeholder: true, ProjectID: DefaultProject, CreatedAt: now()})
		})
	}
	s.update(func(tx *index.Tx) error {
		return tx.PutVolume(&index.Volume{ID: "22222222-0000-0000-0000-000000000001", Name: "busy", Status: index.StatusBackingUp,
			Size: 1 << 20, Placeholder: true, ProjectID: DefaultProject, CreatedAt: now()})
	})
	state := catalogState(t, s)
	for _, c := range []struct {
		name  string
		req   ManageRequest
		words []string
	}{
		{"id of a volume whose source exists", ManageRequest{ID: lv.ID, Source: other}, []string{lv.ID, "already has source", live, "without --id"}},
		{"name that is not the volume's", ManageRequest{ID: "11111111-0000-0000-0000-000000000001", Name: "nope", Source: other}, []string{"named \"twin\"", "omit --name"}},
		{"two source-less volumes of one name", ManageRequest{Name: "twin", Source: other}, []string{"2 volumes named \"twin\"", "11111111-0000-0000-0000-000000000001", "--id"}},
		{"busy volume", ManageRequest{ID: "22222222-0000-0000-0000-000000000001", Source: other}, []string{"backing-up", "wait"}},
		{"source managed by another volume", ManageRequest{ID: "11111111-0000-0000-0000-000000000001", Source: live}, []string{"already managed as volume " + lv.ID}},
		{"other zone", ManageRequest{ID: "11111111-0000-0000-0000-000000000001", Source: other, AvailabilityZone: "mars"}, []string{"mars", "not configured"}},
	} {
		_, err := s.Manage(ctx, c.req)
		if err == nil {
			t.Errorf("%s: manage succeeded", c.name)
			continue
		}
		for _, w := range c.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
	}
	if got := catalogState(t, s); got != state {
		t.Errorf("refused manages changed the catalog:\n%s\n%s", state, got)
	}
}

// TestSourceGone: a backup of a volume whose file was deleted is refused,
// naming the source and the fix, adds no backup and leaves the volume in
// error; managing the file again (back at its path) makes it available
// and the chain continues.
func TestSourceGone(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 2<<20, 3)
	v, _ := s.Manage(ctx, ManageRequest{Name: "vol", Source: img})
	full, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(img)
	for range 2 {
		_, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
		if err == nil || !strings.Contains(err.Error(), "source "+img+" no longer exists; manage it again") || !strings.Contains(err.Error(), "delete the volume") {
			t.Fatalf("backup of a volume whose source is gone: %v", err)
		}
	}
	if bs, _ := s.ListBackups(ctx, "", false); len(bs) != 1 {
		t.Fatalf("%d backups after the refusals, want only the first", len(bs))
	}
	if vv, _ := s.ShowVolume(ctx, "vol"); vv.Status != index.StatusError {
		t.Fatalf("volume status %s, want error", vv.Status)
	}
	writeFile(t, img, data)
	again, err := s.Manage(ctx, ManageRequest{Name: "vol", Source: img})
	if err != nil || again.ID != v.ID || again.Status != index.StatusAvailable {
		t.Fatalf("manage of the returned source: %+v, %v; want volume %s available", again, err, v.ID)
	}
	inc, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
	if err != nil || inc.ParentID == nil || *inc.ParentID != full.ID {
		t.Fatalf("incremental after managing again: %+v, %v", inc, err)
	}
}

// TestRebuildFindsOwnedImages: a volume volback created (its image under
// <home>/volumes/) comes back from catalog-rebuild with its file, not as a
// placeholder; an image no record names is reported.
func TestRebuildFindsOwnedImages(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	c := makeChain(t, s)
	r, err := s.Restore(ctx, RestoreRequest{Backup: c.ids[1], Name: "copy"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "copy"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	owned, _ := s.ShowVolume(ctx, r.VolumeID)
	empty, err := s.CreateVolume(ctx, CreateRequest{Name: "empty", Size: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s = loseCatalog(t, s)
	rep, err := s.RebuildCatalog(ctx, RebuildRequest{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.ShowVolume(ctx, r.VolumeID)
	if err != nil {
		t.Fatal(err)
	}
	if v.Path != owned.Path || v.Driver != "file" || v.Name != "copy" || v.SizeBytes != owned.SizeBytes {
		t.Fatalf("rebuilt volume %+v, want the image %s back", v, owned.Path)
	}
	inc, err := s.CreateBackup(ctx, BackupRequest{Volume: "copy", Incremental: true}, nil)
	if err != nil || *inc.ParentID != b.ID {
		t.Fatalf("incremental of the found volume: %+v, %v", inc, err)
	}
	if got := strings.Join(rep.Problems, "\n"); !strings.Contains(got, empty.Path) || !strings.Contains(got, "belongs to no volume") {
		t.Errorf("rebuild problems %q do not report the unclaimed image %s", got, empty.Path)
	}
	if _, err := s.DeleteVolume(ctx, "copy"); err == nil {
		if _, err := os.Stat(owned.Path); !os.IsNotExist(err) {
			t.Errorf("deleting the found volume left its image (volback created it): %v", err)
		}
	}
}

// oddSource reports a size that is not whole sectors, as an image file
// backed up before sizes were checked did.
type oddSource struct {
	volume.Source
	size int64
}

func (o oddSource) Size() int64 { return o.size }

// TestRestoreOddSizedBackup: such a backup still restores to a new volume,
// rounded up to whole sectors with a zero tail.
func TestRestoreOddSizedBackup(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 1<<20, 4)
	const odd = 1<<20 - 100
	s.Manage(ctx, ManageRequest{Name: "vol", Source: img})
	s.openSource = func(v *index.Volume) (volume.Source, error) {
		src, err := volume.OpenSource(v.Path)
		return oddSource{src, odd}, err
	}
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	if err != nil || b.SizeBytes != odd {
		t.Fatalf("backup of an odd-sized source: %+v, %v", b, err)
	}
	got := restoreBytes(t, s, b.ID)
	want := append(bytes.Clone(data[:odd]), make([]byte, 100)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("restored %d bytes; want the backup's %d bytes and %d zeros", len(got), odd, 100)
	}
}
