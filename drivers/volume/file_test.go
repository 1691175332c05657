package volume

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

const MiB = 1 << 20

var ctx = context.Background()

func random(t *testing.T, n int) []byte {
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

func readBack(t *testing.T, s interface {
	ReadAt([]byte, int64) (int, error)
}, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if got, err := s.ReadAt(p, off); err != nil || got != n {
		t.Fatalf("ReadAt %d+%d: %d bytes, %v", off, n, got, err)
	}
	return p
}

func covered(exts []Extent, off int64) bool {
	for _, e := range exts {
		if off >= e.Offset && off < e.Offset+e.Length {
			return true
		}
	}
	return false
}

// TestSparseRoundTrip writes a few pieces into a new sparse target, then
// checks the file stays sparse, Allocated covers exactly the written data
// (block-aligned) and ReadAt returns the bytes and zeros in the holes.
func TestSparseRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "images", "vol.img")
	const size = 64 * MiB
	tg, err := CreateTarget(path, size)
	if err != nil {
		t.Fatal(err)
	}
	if !tg.Fresh() || tg.Size() != size {
		t.Fatalf("CreateTarget: Fresh %v Size %d", tg.Fresh(), tg.Size())
	}
	pieces := map[int64][]byte{
		0:            random(t, 4096),
		5*MiB + 100:  random(t, 10),
		20 * MiB:     random(t, MiB),
		size - 1:     {0xAB},
		33*MiB - 300: random(t, 600), // straddles a block boundary
	}
	var written int64
	for off, p := range pieces {
		if n, err := tg.WriteAt(p, off); err != nil || n != len(p) {
			t.Fatalf("WriteAt %d: %d, %v", off, n, err)
		}
		written += int64(len(p))
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	tg.Close()
	if got := allocatedBytes(t, path); got > 2*MiB {
		t.Fatalf("file uses %d bytes on disk after writing %d: not sparse", got, written)
	}

	src, err := OpenSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Size() != size {
		t.Fatalf("Size %d, want %d", src.Size(), size)
	}
	exts, err := src.Allocated(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extents: %v", exts)
	var total, end int64
	for _, e := range exts {
		if e.Offset < end || e.Length <= 0 || e.Offset+e.Length > size {
			t.Fatalf("extents not sorted, non-overlapping and inside the volume: %v", exts)
		}
		end = e.Offset + e.Length
		total += e.Length
	}
	if total > 2*MiB {
		t.Fatalf("Allocated reports %d bytes for %d written", total, written)
	}
	for off, p := range pieces {
		for i := int64(0); i < int64(len(p)); i++ {
			if !covered(exts, off+i) {
				t.Fatalf("written byte at %d not in any extent %v", off+i, exts)
			}
		}
		if got := readBack(t, src, off, len(p)); !bytes.Equal(got, p) {
			t.Fatalf("ReadAt %d: wrong bytes", off)
		}
	}
	for _, hole := range []int64{2 * MiB, 10 * MiB, 40 * MiB, 60 * MiB} {
		if covered(exts, hole) {
			t.Fatalf("hole at %d reported allocated: %v", hole, exts)
		}
		if got := readBack(t, src, hole, 4096); !bytes.Equal(got, make([]byte, 4096)) {
			t.Fatalf("hole at %d does not read as zeros", hole)
		}
	}
}

func TestAllocatedEmptyAndFull(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	hole := filepath.Join(dir, "hole")
	os.WriteFile(hole, nil, 0o600)
	os.Truncate(hole, 8*MiB)
	full := filepath.Join(dir, "full")
	os.WriteFile(full, random(t, 3*MiB+5), 0o600)
	for path, want := range map[string][]Extent{empty: nil, hole: nil, full: {{0, 3*MiB + 5}}} {
		s, err := OpenSource(path)
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

func TestZeroPunchesHole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol.img")
	data := random(t, 8*MiB)
	os.WriteFile(path, data, 0o600)
	tg, err := OpenTarget(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if tg.Fresh() || tg.Size() != int64(len(data)) {
		t.Fatalf("OpenTarget: Fresh %v Size %d", tg.Fresh(), tg.Size())
	}
	before := allocatedBytes(t, path)
	const off, n = MiB + 123, 3 * MiB
	if err := tg.Zero(off, n); err != nil {
		t.Fatal(err)
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := append([]byte(nil), data...)
	clear(want[off : off+n])
	if !bytes.Equal(got, want) {
		t.Fatal("after Zero the file does not read as the data with zeros in the range")
	}
	if after := allocatedBytes(t, path); before-after < 2*MiB {
		t.Fatalf("Zero of 3 MiB freed only %d bytes (%d -> %d): no hole punched", before-after, before, after)
	}
	if err := tg.Zero(int64(len(data))-10, 11); err == nil {
		t.Fatal("Zero past the end succeeded")
	}
	if _, err := tg.WriteAt([]byte("xy"), int64(len(data))-1); err == nil {
		t.Fatal("WriteAt past the end succeeded: a target must not grow")
	}
	if st, _ := os.Stat(path); st.Size() != int64(len(data)) {
		t.Fatalf("file size changed to %d", st.Size())
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.img")
	cases := map[string]string{
		dir:         "is a directory, not a regular file or block device",
		"/dev/null": "is a character device, not a regular file or block device",
		fifo:        "is a named pipe (FIFO), not a regular file or block device",
		missing:     "does not exist",
	}
	for path, want := range cases {
		for name, open := range map[string]func(string) error{
			"OpenSource": func(p string) error { s, err := OpenSource(p); closeIf(s, err); return err },
			"OpenTarget": func(p string) error { s, err := OpenTarget(p); closeIf(s, err); return err },
		} {
			err := open(path)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s(%s): %v, want an error naming the path and %q", name, path, err, want)
			}
		}
	}
	if _, err := Kind("/dev/null"); err == nil || err.Error() != `"/dev/null" is a character device, not a regular file or block device` {
		t.Errorf("Kind(/dev/null): %v", err)
	}

	existing := filepath.Join(dir, "existing.img")
	os.WriteFile(existing, []byte("keep me"), 0o600)
	if tg, err := CreateTarget(existing, MiB); err == nil || !strings.Contains(err.Error(), "already exists") {
		closeIf(tg, err)
		t.Fatalf("CreateTarget over an existing file: %v", err)
	}
	if got, _ := os.ReadFile(existing); string(got) != "keep me" {
		t.Fatalf("refused CreateTarget changed the file: %q", got)
	}
	if _, err := CreateTarget(filepath.Join(dir, "neg.img"), -1); err == nil {
		t.Fatal("CreateTarget with negative size succeeded")
	}
}

func closeIf(c interface{ Close() error }, err error) {
	if err == nil {
		c.Close()
	}
}

func TestConcurrentReadAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vol.img")
	data := random(t, 4*MiB)
	os.WriteFile(path, data, 0o600)
	s, err := OpenSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			p := make([]byte, 64<<10)
			for i := range 64 {
				off := int64((w*64+i)%64) * int64(len(p))
				if _, err := s.ReadAt(p, off); err != nil || !bytes.Equal(p, data[off:off+int64(len(p))]) {
					t.Errorf("ReadAt %d: %v or wrong bytes", off, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
