package file

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/volback/volback/drivers/volume"
	"golang.org/x/sys/unix"
)

var ctx = context.Background()

func random(n int) []byte {
	p := make([]byte, n)
	rand.Read(p)
	return p
}

func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func closeIf(c interface{ Close() error }, err error) {
	if err == nil {
		c.Close()
	}
}

// TestRefusals: what is not an image file or block device, what is
// missing and a relative path are refused, naming the path.
func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		dir:                               "is a directory, not a regular file or block device",
		"/dev/null":                       "is a character device, not a regular file or block device",
		fifo:                              "is a named pipe (FIFO), not a regular file or block device",
		filepath.Join(dir, "missing.img"): "does not exist",
		"relative.img":                    "not an absolute path",
	}
	d := Driver{}
	for path, want := range cases {
		for name, try := range map[string]func(string) error{
			"Stat":       func(p string) error { _, err := d.Stat(p); return err },
			"OpenSource": func(p string) error { s, err := d.OpenSource(p); closeIf(s, err); return err },
			"OpenTarget": func(p string) error { s, err := d.OpenTarget(p); closeIf(s, err); return err },
			"InUse":      func(p string) error { _, err := d.InUse(p); return err },
			"Snapshot":   func(p string) error { _, err := d.Snapshot(ctx, p, "s"); return err },
		} {
			err := try(path)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s(%s): %v, want an error naming the path and %q", name, path, err, want)
			}
		}
	}
	if _, err := d.Stat(filepath.Join(dir, "missing.img")); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Stat of a missing file: %v, want ErrNotFound", err)
	}
}

// TestOddSizeRefused: a file that is not whole 512-byte sectors (such as
// /etc/passwd) is not a volume: refused with the reason and the fix.
func TestOddSizeRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := Driver{}
	for name, try := range map[string]func() error{
		"Stat":       func() error { _, err := d.Stat(path); return err },
		"OpenSource": func() error { s, err := d.OpenSource(path); closeIf(s, err); return err },
		"OpenTarget": func() error { s, err := d.OpenTarget(path); closeIf(s, err); return err },
	} {
		err := try()
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "1 bytes, not a whole number of 512-byte sectors") ||
			!strings.Contains(err.Error(), "truncate -s 512 "+path) {
			t.Errorf("%s of a 1-byte file: %v; want a refusal naming it, the sector size and the fix", name, err)
		}
	}
	if got, _ := os.ReadFile(path); string(got) != "x" {
		t.Fatalf("a refused open changed the file: %q", got)
	}
}

// TestZeroPunchesHole: zeroing part of an image file frees its blocks.
func TestZeroPunchesHole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol.img")
	data := random(8 * MiB)
	os.WriteFile(path, data, 0o600)
	tg, err := Driver{}.OpenTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	before := allocatedBytes(t, path)
	const off, n = MiB + 123, 3 * MiB
	if err := tg.Zero(off, n); err != nil {
		t.Fatal(err)
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := bytes.Clone(data)
	clear(want[off : off+n])
	if !bytes.Equal(got, want) {
		t.Fatal("after Zero the file does not read as the data with zeros in the range")
	}
	if after := allocatedBytes(t, path); before-after < 2*MiB {
		t.Fatalf("Zero of 3 MiB freed only %d bytes (%d -> %d): no hole punched", before-after, before, after)
	}
}

func TestAllocatedEmptyAndFull(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	hole := filepath.Join(dir, "hole")
	sparseFile(t, hole, 8*MiB)
	full := filepath.Join(dir, "full")
	os.WriteFile(full, random(3*MiB+512), 0o600)
	for path, want := range map[string][]volume.Extent{empty: nil, hole: nil, full: {{Offset: 0, Length: 3*MiB + 512}}} {
		s, err := Driver{}.OpenSource(path)
		if err != nil {
			t.Fatal(err)
		}
		exts, err := s.Allocated(ctx)
		s.Close()
		if err != nil || len(exts) != len(want) || (len(want) > 0 && exts[0] != want[0]) {
			t.Fatalf("%s: Allocated %v, %v; want %v", filepath.Base(path), exts, err, want)
		}
	}
}

// TestTargetLocksImage: an open target holds an OFD write lock, so QEMU
// (which tests for one) and other volback processes see the image in use.
func TestTargetLocksImage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol.img")
	sparseFile(t, path, MiB)
	tg, err := Driver{}.OpenTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil || lk.Type != unix.F_WRLCK {
		t.Fatalf("while a target is open, a read lock would not conflict (GETLK: type %d, %v)", lk.Type, err)
	}
	if u, err := (Driver{}).InUse(path); err != nil || !u.InUse || !strings.Contains(u.Reason, "write-locked by pid") {
		t.Fatalf("InUse while a target is open: %+v, %v", u, err)
	}
	tg.Close()
	if u, err := (Driver{}).InUse(path); err != nil || u.InUse {
		t.Fatalf("InUse after the target closed: %+v, %v", u, err)
	}
}

// TestSparseCopyKeepsHoles: where the filesystem cannot reflink, a
// snapshot is a copy of the data extents only, so it stays sparse.
func TestSparseCopyKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	if supportsReflink(t, dir) {
		t.Skipf("%s can reflink; TestImageFilesOnXFS covers that", dir)
	}
	path := filepath.Join(dir, "vol.img")
	sparseFile(t, path, 256*MiB)
	pieces := map[int64][]byte{0: random(MiB), 100 * MiB: random(2 * MiB), 256*MiB - 4096: random(4096)}
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	for off, p := range pieces {
		f.WriteAt(p, off)
	}
	f.Close()
	snap, err := Driver{}.Snapshot(ctx, path, "s1")
	if err != nil {
		t.Fatal(err)
	}
	defer Driver{}.DeleteSnapshot(path, "s1")
	if snap.Method != volume.MethodCopy || snap.Locator != path+"@s1" || snap.Size != 256*MiB {
		t.Fatalf("Snapshot = %+v, want a sparse copy at %s@s1 of 256 MiB", snap, path)
	}
	if got := allocatedBytes(t, snap.Locator); got > 8*MiB {
		t.Fatalf("the copy uses %d bytes on disk for 3 MiB of data: holes were filled", got)
	}
	src, err := Driver{}.OpenSource(snap.Locator)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exts, _ := src.Allocated(ctx)
	var total int64
	for _, e := range exts {
		total += e.Length
	}
	if total > 8*MiB {
		t.Fatalf("the copy's data extents %v cover %d bytes", exts, total)
	}
	for off, p := range pieces {
		got := make([]byte, len(p))
		src.ReadAt(got, off)
		if !bytes.Equal(got, p) {
			t.Fatalf("the copy differs at %d", off)
		}
	}
}

// TestReflinkSharesExtents: on XFS a snapshot of a 64 MiB image takes
// (almost) no space: the clone shares the image's extents.
func TestReflinkSharesExtents(t *testing.T) {
	dir := xfsDir(t)
	path := filepath.Join(dir, "vol.img")
	if err := os.WriteFile(path, random(64*MiB), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Sync()
	free := func() int64 {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Bfree) * st.Bsize
	}
	before := free()
	snap, err := Driver{}.Snapshot(ctx, path, "s1")
	if err != nil {
		t.Fatal(err)
	}
	syscall.Sync()
	if snap.Method != volume.MethodReflink {
		t.Fatalf("Snapshot on XFS: method %q, want %q", snap.Method, volume.MethodReflink)
	}
	if used := before - free(); used > 4*MiB {
		t.Fatalf("the reflink snapshot of 64 MiB used %d bytes: extents are not shared", used)
	}
	if err := (Driver{}).DeleteSnapshot(path, "s1"); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteRefusesBlockDevice: volback never deletes a device.
func TestDeleteRefusesBlockDevice(t *testing.T) {
	backing := filepath.Join(t.TempDir(), "backing.img")
	sparseFile(t, backing, MiB)
	dev, _ := losetup(t, backing)
	if err := (Driver{}).Delete(dev); err == nil || !strings.Contains(err.Error(), "block device") {
		t.Fatalf("Delete(%s): %v, want a refusal", dev, err)
	}
	if _, err := os.Stat(dev); err != nil {
		t.Fatalf("the device is gone: %v", err)
	}
}

// TestLookup: the registry sends absolute paths here and refuses relative
// paths and schemes nobody registered, saying what it knows.
func TestLookup(t *testing.T) {
	if d, err := volume.Lookup("/dev/sda"); err != nil || d != (Driver{}) {
		t.Fatalf("Lookup(/dev/sda): %v, %v", d, err)
	}
	for loc, want := range map[string]string{
		"disk.img":           "neither an absolute path nor a URL",
		"nosuch://pool/img":  `no volume driver for scheme "nosuch" in this build (it knows: /absolute/path`,
		"":                   "neither an absolute path nor a URL",
		"../up/../disk.img":  "neither an absolute path nor a URL",
		"://missing-scheme/": "neither an absolute path nor a URL",
	} {
		if _, err := volume.Stat(loc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Stat(%q): %v, want %q", loc, err, want)
		}
	}
}
