package file

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/volback/volback/drivers/internal/pagecache"
	"github.com/volback/volback/drivers/volume"
	"golang.org/x/sys/unix"
)

// restoreLike writes data to tg as a restore does, from 4 goroutines: 64
// KiB chunks (some from unaligned memory), a run of zeros left unwritten,
// an odd tail, and rewrites; it returns what the volume must read as.
func restoreLike(t *testing.T, tg volume.Target, size int64) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 7))
	want := make([]byte, size)
	const chunk = 64 << 10
	offs := make(chan int64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 4 {
		wg.Go(func() {
			for off := range offs {
				n := min(chunk, size-off)
				buf := make([]byte, n+3)
				p := buf[off/chunk%2*3:][:n] // every other chunk unaligned in memory
				mu.Lock()
				for i := range p {
					p[i] = byte(r.IntN(256))
				}
				copy(want[off:], p)
				mu.Unlock()
				if _, err := tg.WriteAt(p, off); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for off := int64(0); off < size; off += chunk {
		if off/chunk%40 < 10 { // 640 KiB of every 2.5 MiB stay zeros
			continue
		}
		offs <- off
	}
	close(offs)
	wg.Wait()
	return want
}

// TestDirectRestoreTarget: a restore target on ext4 is written with
// O_DIRECT in gathered segments, and reads back exactly, through the
// handle before Sync and from the file after; a Zero over gathered data
// wins; a tail shorter than the direct alignment goes buffered.
func TestDirectRestoreTarget(t *testing.T) {
	dir := t.TempDir()
	const size = 24<<20 + 512 // an odd tail
	for _, create := range []bool{true, false} {
		path := filepath.Join(dir, "vol.img")
		os.Remove(path)
		var tg volume.Target
		var err error
		if create {
			tg, err = Driver{}.CreateTarget(path, size)
		} else {
			sparseFile(t, path, size)
			tg, err = Driver{}.OpenTarget(path)
		}
		if err != nil {
			t.Fatal(err)
		}
		h := tg.(*handle)
		if h.direct == nil {
			t.Skipf("%s takes no O_DIRECT here", dir)
		}
		if h.InFlight() < 2 {
			t.Fatalf("a direct target asks for %d writes in flight", h.InFlight())
		}
		want := restoreLike(t, tg, size)
		got := make([]byte, 3<<20)
		// The last segments are partly written (zeros follow): still gathered.
		if _, err := h.ReadAt(got, 21<<20); err != nil || !bytes.Equal(got, want[21<<20:24<<20]) {
			t.Fatalf("create=%v: ReadAt before Sync: %v, equal %v", create, err, bytes.Equal(got, want[21<<20:24<<20]))
		}
		if _, err := tg.WriteAt(bytes.Repeat([]byte{9}, 64<<10), 10<<20); err != nil {
			t.Fatal(err)
		}
		if err := tg.Zero(10<<20+4096, 8192); err != nil { // over the gathered write above
			t.Fatal(err)
		}
		copy(want[10<<20:], bytes.Repeat([]byte{9}, 64<<10))
		clear(want[10<<20+4096 : 10<<20+4096+8192])
		if err := tg.Sync(); err != nil {
			t.Fatal(err)
		}
		if file, _ := os.ReadFile(path); !bytes.Equal(file, want) { // before Close
			t.Fatalf("create=%v: after Sync the file differs from what was written", create)
		}
		if err := tg.Close(); err != nil {
			t.Fatal(err)
		}
		if h.direct.refused.Load() {
			t.Fatal("the filesystem refused direct writes; the test proves nothing")
		}
	}
}

// TestBufferedWhereNoDirectIO: on ramfs, which refuses O_DIRECT, a target
// is written buffered, one write in flight; on ext4, a direct write the
// kernel refuses (here: an unaligned range, the alignment test made wrong
// on purpose) turns the target to buffered writes. Both read back
// exactly.
func TestBufferedWhereNoDirectIO(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	sh(t, "mount", "-t", "ramfs", "none", dir)
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	const size = 4<<20 + 512
	path := filepath.Join(dir, "vol.img")
	tg, err := Driver{}.CreateTarget(path, size)
	if err != nil {
		t.Fatal(err)
	}
	if h := tg.(*handle); h.direct != nil || h.InFlight() != 0 {
		t.Fatalf("ramfs target: direct %v, %d in flight", h.direct != nil, h.InFlight())
	}
	want := restoreLike(t, tg, size)
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	tg.Close()
	if file, _ := os.ReadFile(path); !bytes.Equal(file, want) {
		t.Fatal("ramfs: the file differs from what was written")
	}

	path = filepath.Join(t.TempDir(), "vol.img")
	if tg, err = (Driver{}).CreateTarget(path, size); err != nil {
		t.Fatal(err)
	}
	h := tg.(*handle)
	if h.direct == nil {
		t.Skip("no O_DIRECT here")
	}
	// Unaligned ranges now go to the kernel as they are; restoreLike
	// leaves this one be.
	h.direct.offAlign = 1
	if _, err := tg.WriteAt([]byte{1, 2, 3}, 4097); err != nil {
		t.Fatal(err)
	}
	want = restoreLike(t, tg, size)
	copy(want[4097:], []byte{1, 2, 3})
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	if !h.direct.refused.Load() {
		t.Fatal("the kernel took an unaligned direct write; the test proves nothing")
	}
	if file, _ := os.ReadFile(path); !bytes.Equal(file, want) {
		t.Fatal("refused direct IO: the file differs from what was written")
	}
}

// TestDirectSource: an image file opened for backup is read with O_DIRECT
// where the read is aligned, buffered where not (an odd offset or tail,
// unaligned memory) or where the filesystem has no direct IO (ramfs), and
// every read returns the file's bytes.
func TestDirectSource(t *testing.T) {
	requireRoot(t)
	ramfs := t.TempDir()
	sh(t, "mount", "-t", "ramfs", "none", ramfs)
	t.Cleanup(func() { exec.Command("umount", ramfs).Run() })
	const size = 3<<20 + 512
	data := random(size)
	for _, dir := range []string{t.TempDir(), ramfs} {
		path := filepath.Join(dir, "src.img")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		src, err := Driver{}.OpenSource(path)
		if err != nil {
			t.Fatal(err)
		}
		h := src.(*handle)
		if (h.direct != nil) != (dir != ramfs) {
			t.Fatalf("%s: direct reads %v", dir, h.direct != nil)
		}
		// Direct reads have no read-ahead: a backup keeps several in flight.
		if want := map[bool]int{true: directReaders, false: 0}[h.direct != nil]; h.InFlight() != want {
			t.Fatalf("%s: a source asks for %d reads in flight, want %d", dir, h.InFlight(), want)
		}
		if h.direct != nil {
			// A direct read leaves the page cache as it found it.
			h.f.Sync()
			unix.Fadvise(int(h.f.Fd()), 0, 0, unix.FADV_DONTNEED)
			p := make([]byte, 1<<20)
			if _, err := src.ReadAt(p, 1<<20); err != nil || !bytes.Equal(p, data[1<<20:2<<20]) {
				t.Fatalf("direct read: %v", err)
			}
			if n, err := pagecache.Resident(h.f, 1<<20, 1<<20); err != nil {
				t.Fatal(err)
			} else if n > 0 {
				t.Fatalf("an aligned read brought %d pages into the page cache: not direct", n)
			}
		}
		buf := make([]byte, 1<<20+4096)
		for _, r := range [][2]int64{{0, 1 << 20}, {1 << 20, 1 << 20}, {4096, 8192}, {3 << 20, 512}, {100, 5000}, {2<<20 + 4096, 1<<20 - 4096 + 512}} {
			for _, shift := range []int{0, 3} { // aligned memory, and not
				p := buf[shift : shift+int(r[1])]
				n, err := src.ReadAt(p, r[0])
				if (err != nil && err != io.EOF) || n != len(p) || !bytes.Equal(p, data[r[0]:r[0]+r[1]]) {
					t.Fatalf("%s: read [%d, %d) shifted %d: %d, %v, equal %v", dir, r[0], r[0]+r[1], shift, n, err, bytes.Equal(p, data[r[0]:r[0]+r[1]]))
				}
			}
		}
		if h.direct != nil && h.direct.refused.Load() {
			t.Fatal("direct reads were refused; the test proves nothing")
		}
		src.Close()
	}
}
