package pagecache

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A file's pages are counted out of the cache after FADV_DONTNEED and
// back in once read.
func TestResident(t *testing.T) {
	page := os.Getpagesize()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 8*page), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Sync()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if n, err := Resident(f, 0, int64(8*page)); err != nil || n != 0 {
		t.Skipf("%d pages still cached after FADV_DONTNEED (%v): this filesystem keeps them", n, err)
	}
	if _, err := f.ReadAt(make([]byte, 3*page), int64(2*page)); err != nil {
		t.Fatal(err)
	}
	n, err := Resident(f, int64(2*page), int64(3*page))
	if err != nil || n != 3 {
		t.Fatalf("after reading 3 pages: %d resident, %v", n, err)
	}
	if n, _ := Resident(f, 0, 0); n != 0 {
		t.Fatalf("an empty range: %d", n)
	}
}
