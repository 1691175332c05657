package integration

import (
	"path/filepath"
	"testing"
	"time"
)

// TestSparseImage backs up a 16 GiB image holding 64 MiB of random data in
// four spread extents: the backup reads only the data, the repository grows
// by about the data, and the restored image is sparse and byte-identical.
func TestSparseImage(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(t.TempDir(), "sparse.img")
	const size = 16 * gib
	makeSparse(t, img, size)
	// 16 MiB at the start, in the middle of the first GiB, at 7 GiB
	// (not chunk-aligned) and right before the end.
	for i, off := range []int64{0, 512 * mib, 7*gib + 12345, size - 16*mib} {
		writeRandom(t, img, off, 16*mib, uint64(100+i))
	}
	if a := allocated(t, img); a > 80*mib {
		t.Skipf("the temp file system does not keep %s sparse (%d bytes allocated)", img, a)
	}

	manage(t, home, "sparse", img)
	before := dirSize(t, repoDir(home))
	start := time.Now()
	b := backupCreate(t, home, "sparse")
	took := time.Since(start)
	grew := dirSize(t, repoDir(home)) - before
	t.Logf("backup of 16 GiB sparse / 64 MiB data: %v, repository +%d bytes", took, grew)
	if took > 60*time.Second {
		t.Errorf("backup took %v; a 16 GiB image with 64 MiB of data should take far less than 60 s (are holes being read?)", took)
	}
	if grew < 60*mib || grew > 80*mib {
		t.Errorf("repository grew by %d bytes (%.1f MiB), want 60..80 MiB for 64 MiB of random data", grew, float64(grew)/float64(mib))
	}
	if b.SizeBytes != size || b.Size != 16 {
		t.Errorf("backup size %d GiB, size_bytes %d; want 16, %d", b.Size, b.SizeBytes, int64(size))
	}

	start = time.Now()
	r := restoreNew(t, home, b.ID, "sparse-restored")
	t.Logf("restore: %v", time.Since(start))
	if got := fileSize(t, r.Path); got != size {
		t.Fatalf("restored image is %d bytes, want %d", got, int64(size))
	}
	if a := allocated(t, r.Path); a >= 100*mib {
		t.Errorf("restored image allocates %d bytes (%.1f MiB), want < 100 MiB: holes were written as zeros", a, float64(a)/float64(mib))
	}
	compareSparse(t, img, r.Path)
}
