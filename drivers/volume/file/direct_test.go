package file

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/volback/volback/drivers/volume"
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
