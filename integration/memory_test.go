package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vmHWM is a live process's peak resident set (VmHWM), in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kib)
			return kib << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// rss samples a live process's resident set split as /proc shows it:
// anonymous (heap, stacks) and file-backed (the binary, Badger's mapped
// tables), in bytes.
func rss(pid int) (anon, file int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kib int64
		if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kib)
			anon = kib << 10
		} else if rest, ok := strings.CutPrefix(line, "RssFile:"); ok {
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kib)
			file = kib << 10
		}
	}
	return anon, file
}

// sampleRSS records the largest anonymous and file-backed resident sets
// of pid until stop is closed (diagnostics for a failed bound).
func sampleRSS(pid int, stop <-chan struct{}) (result func() (anon, file int64)) {
	var maxAnon, maxFile int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			a, f := rss(pid)
			maxAnon, maxFile = max(maxAnon, a), max(maxFile, f)
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() (int64, int64) { <-done; return maxAnon, maxFile }
}

// ownerMemoryBound is the most the owner may hold at its peak while it
// backs up and restores a 64 GiB sparse volume with 1 GiB of data. It is
// a memory bound, not a time bound. Measured on the 2-core test machine
// (docs/BENCHMARKS.md, "Scale"): VmHWM 80.5-83.5 MiB (2026-12-01; 96-101
// MiB before the catalog's table pages and the code pages loading touched
// were dropped from RSS and a pack buffer went), of which ~30 MiB is
// mapped from files (the binary ~16 MiB, what is left of the C and Ceph
// libraries, Badger's memtable logs and tables); the rest is the Go heap,
// which the process's soft memory limit (56 MiB plus the zstd encoders')
// keeps near 55 MiB: two 8 MiB pack buffers, 1 MiB read blocks, one
// manifest segment (~0.6 MiB), Badger's memtable, encoders and decode
// buffers. 104 MiB is that plus 25% for GC timing on a loaded machine.
// What it catches: state that grows with the volume. A 64 GiB volume has
// 1 Mi chunks: a whole manifest with its IDs in memory is ~36 MiB, reading
// holes into buffers or queueing packs more; either pushes the owner over
// it (and a 1 TiB volume 16 times further). Smaller per-data costs (pack
// entries kept to the end: ~2 MiB for 1 GiB) are below its resolution.
const ownerMemoryBound = 104 << 20

// TestOwnerMemory64GiBSparse: `volback serve` owns the catalog; a client
// backs up a 64 GiB sparse image holding 1 GiB of data in 16 spread
// 64 MiB pieces and restores it. The owner's peak RSS (VmHWM) stays under
// ownerMemoryBound, and the restored image is identical and sparse.
func TestOwnerMemory64GiBSparse(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(t.TempDir(), "big.img")
	const size, piece, pieces = 64 * gib, 64 * mib, 16
	makeSparse(t, img, size)
	for i := range pieces {
		off := int64(i) * (size / pieces)
		if i == pieces-1 {
			off = size - piece // the last piece ends the volume
		}
		writeRandom(t, img, off+int64(i)*4096, piece-int64(i)*4096, uint64(700+i)) // unaligned starts
	}
	if a := allocated(t, img); a > 2*gib {
		t.Skipf("the temp file system does not keep %s sparse (%d bytes allocated)", img, a)
	}
	owner := startServe(t, home)
	idle := vmHWM(t, owner.Process.Pid)

	manage(t, home, "big", img)
	stop := make(chan struct{})
	sampled := sampleRSS(owner.Process.Pid, stop)
	start := time.Now()
	b := backupCreate(t, home, "big")
	took := time.Since(start)
	afterBackup := vmHWM(t, owner.Process.Pid)
	if b.SizeBytes != size {
		t.Fatalf("backup size_bytes %d, want %d", b.SizeBytes, int64(size))
	}

	start = time.Now()
	r := restoreNew(t, home, b.ID, "big-restored")
	tookRestore := time.Since(start)
	peak := vmHWM(t, owner.Process.Pid)
	close(stop)
	anon, file := sampled()
	t.Logf("owner's sampled peaks: anonymous %.1f MiB, file-backed %.1f MiB", float64(anon)/float64(mib), float64(file)/float64(mib))
	t.Logf("owner VmHWM: idle %.1f MiB, after backup (%v) %.1f MiB, after restore (%v) %.1f MiB; bound %d MiB",
		float64(idle)/float64(mib), took.Round(time.Millisecond), float64(afterBackup)/float64(mib), tookRestore.Round(time.Millisecond),
		float64(peak)/float64(mib), ownerMemoryBound>>20)
	if peak > ownerMemoryBound {
		t.Errorf("the owner's peak RSS was %.1f MiB backing up and restoring 64 GiB (1 GiB of data); the bound is %d MiB: memory grows with the volume",
			float64(peak)/float64(mib), ownerMemoryBound>>20)
	}
	if a := allocated(t, r.Path); a > 2*gib {
		t.Errorf("restored image allocates %d bytes: holes were written", a)
	}
	compareSparse(t, img, r.Path)
	os.Remove(r.Path)
}
