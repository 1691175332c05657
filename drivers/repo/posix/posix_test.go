package posix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/volback/volback/drivers/internal/pagecache"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/repo/repotest"
)

var ctx = context.Background()

func open(t *testing.T) repo.Backend {
	t.Helper()
	b, err := repo.Open(ctx, "file://"+filepath.Join(t.TempDir(), "repo"), true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) { repotest.Run(t, open) }

func TestOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "repo")
	_, err := repo.Open(ctx, "file://"+dir, false)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "mounted") {
		t.Fatalf("open missing without create: %v, want an error naming %s and the mount", err, dir)
	}
	b, err := repo.Open(ctx, "file://"+dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Name() != "volback.drivers.posix" || b.Location() != "file://"+dir {
		t.Fatalf("Name %q Location %q", b.Name(), b.Location())
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("created directory: %v, mode %v, want 0700", err, st.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("open left files behind (write probe?): %v", entries)
	}
	// Re-open existing without create.
	b2, err := repo.Open(ctx, "file://"+dir, false)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	b2.Close()

	file := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(file, nil, 0o600)
	for _, u := range []string{"file://" + file, "file://otherhost/srv/repo", "file:relative/path"} {
		if _, err := repo.Open(ctx, u, false); err == nil {
			t.Errorf("Open %q succeeded, want refusal", u)
		} else {
			t.Logf("Open %q: %v", u, err)
		}
	}
}

// TestOpenReadOnly mounts a read-only tmpfs: root ignores permission bits,
// but not a read-only filesystem.
func TestOpenReadOnly(t *testing.T) {
	dir := mountTmpfs(t, "ro,size=1m")
	_, err := Open(dir, false)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("Open of read-only directory: %v, want an error naming %s as not writable", err, dir)
	}
	t.Log(err)
}

func TestShardedLayout(t *testing.T) {
	b := open(t).(*Backend)
	defer b.Close()
	name := repotest.PackName(t, "c3")
	if err := b.Put(ctx, name, []byte("pack")); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(name, "packs/")
	if data, err := os.ReadFile(filepath.Join(b.Root(), "packs", "c3", id)); err != nil || string(data) != "pack" {
		t.Fatalf("pack not at packs/c3/<id>: %q %v", data, err)
	}
	// Leftovers of a crashed Put and stray files are not objects.
	os.WriteFile(filepath.Join(b.Root(), "packs", "c3", ".tmp-123"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(b.Root(), "packs", "c3", "ffff"), []byte("misplaced"), 0o600)
	os.WriteFile(filepath.Join(b.Root(), ".tmp-456"), []byte("partial"), 0o600)
	if got := repotest.ListAll(t, b, ""); len(got) != 1 || got[0] != name {
		t.Fatalf("List: %v, want only %s", got, name)
	}
	for _, bad := range []string{"packs/x", "packs/ab/cd", "backups/.tmp-1"} {
		if err := b.Put(ctx, bad, nil); err == nil {
			t.Errorf("Put %q accepted", bad)
		}
	}
}

// TestPutFailureLeavesNoTemp makes the final rename fail (a directory holds
// the object's path) and checks the temp file is gone.
func TestPutFailureLeavesNoTemp(t *testing.T) {
	b := open(t).(*Backend)
	defer b.Close()
	if err := os.MkdirAll(filepath.Join(b.Root(), "backups", "x", "inner"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := b.Put(ctx, "backups/x", []byte("data"))
	if err == nil || !strings.Contains(err.Error(), "backups/x") {
		t.Fatalf("Put over a directory: %v, want an error naming the object", err)
	}
	assertNoTemp(t, b.Root())
}

func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "size=1m")
	b, err := Open(filepath.Join(dir, "repo"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	name := repotest.PackName(t, "")
	err = b.Put(ctx, name, repotest.Random(t, 2<<20))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("Put of 2 MiB on a 1 MiB filesystem: %v, want ENOSPC naming %s and the full disk", err, name)
	}
	t.Log(err)
	assertNoTemp(t, dir)
	if _, err := b.Stat(ctx, name); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("failed Put left an object: %v", err)
	}
	// The space is back: a small object still fits.
	if err := b.Put(ctx, name, []byte("small")); err != nil {
		t.Fatalf("Put after disk-full failure: %v", err)
	}
}

// TestHandleCacheBounded reads more packs than the cache holds and checks
// the process never keeps more than maxHandles files of the repo open.
func TestHandleCacheBounded(t *testing.T) {
	b := open(t).(*Backend)
	var names []string
	for range 3 * maxHandles {
		n := repotest.PackName(t, "")
		if err := b.Put(ctx, n, []byte("0123456789")); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	p := make([]byte, 4)
	for _, n := range names {
		if err := b.ReadAt(ctx, n, p, 3); err != nil || string(p) != "3456" {
			t.Fatalf("ReadAt %s: %q %v", n, p, err)
		}
	}
	if got := openFilesUnder(t, b.Root()); got != maxHandles {
		t.Fatalf("%d files open under the repository, want the cache bound %d", got, maxHandles)
	}
	b.Close()
	if got := openFilesUnder(t, b.Root()); got != 0 {
		t.Fatalf("%d files still open after Close", got)
	}
}

func BenchmarkReadAt64K(b *testing.B) {
	be, err := Open(b.TempDir(), true)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	var names []string
	for range 16 {
		n := repotest.PackName(b, "")
		if err := be.Put(ctx, n, repotest.Random(b, 4<<20)); err != nil {
			b.Fatal(err)
		}
		names = append(names, n)
	}
	b.SetBytes(64 << 10)
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, 64<<10)
		i := 0
		for pb.Next() {
			i++
			if err := be.ReadAt(ctx, names[i%len(names)], p, int64(i%64)<<16); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs (%v: %s)", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func assertNoTemp(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
			t.Errorf("temp file left behind: %s", p)
		}
		return nil
	})
}

func openFilesUnder(t *testing.T, root string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list open files: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, root+"/") {
			n++
		}
	}
	return n
}

// TestPutDirect: a large object is written with O_DIRECT, its 4 KiB
// bulk left out of the page cache, and reads back exactly, whatever its
// length and its memory's alignment (unaligned memory goes buffered).
func TestPutDirect(t *testing.T) {
	ctx := context.Background()
	be := open(t).(*Backend)
	buf := make([]byte, 8<<20+1)
	for i := range buf {
		buf[i] = byte(i*31 + i>>12)
	}
	for k, c := range []struct {
		data   []byte
		direct bool
	}{
		{buf[:8<<20], true},
		{buf[:3<<20+5], true},     // an odd tail, buffered
		{buf[1 : 2<<20+1], false}, // unaligned memory
		{buf[:4096], false},       // small
	} {
		name := fmt.Sprintf("packs/%064d", k)
		if err := be.Put(ctx, name, c.data); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(physical(be.root, name))
		if err != nil {
			t.Fatal(err)
		}
		bulk := int64(len(c.data)) &^ 4095
		if n, err := pagecache.Resident(f, 0, bulk); err != nil {
			t.Fatal(err)
		} else if c.direct && n > 0 {
			t.Errorf("object %d: %d pages of its aligned bulk in the page cache: not written direct", k, n)
		}
		f.Close()
		got, err := be.Get(ctx, name)
		if err != nil || !bytes.Equal(got, c.data) {
			t.Fatalf("object %d: %v, equal %v", k, err, bytes.Equal(got, c.data))
		}
	}
}
