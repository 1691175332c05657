package index

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestReleaseTablePages checks that the catalog finds Badger's tables (a
// Badger upgrade that moves them fails here) and that dropping their
// pages takes them out of the process's RSS and leaves their data intact.
func TestReleaseTablePages(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	saved := tablePagesEvery
	tablePagesEvery = 0 // only the explicit drop below
	t.Cleanup(func() { tablePagesEvery = saved })

	dir, _ := filepath.EvalSymlinks(t.TempDir())
	c, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 60_000
	for start := 0; start < n; start += MaxBatch {
		err := c.Update(func(tx *Tx) error {
			for i := start; i < start+MaxBatch; i++ {
				if err := tx.PutChunk(testRepo, chunkID(uint64(i)), testChunk(uint64(i))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil { // flushes the memtables into tables
		t.Fatal(err)
	}
	c = openT(t, dir)
	levels := badgerLevels(c.db)
	if levels == nil {
		t.Fatal("Badger's levels not found: its internals changed, see badgerLevels")
	}
	readAll := func() {
		t.Helper()
		err := c.View(func(tx *Tx) error {
			for i := range n {
				ch, ok, err := tx.Chunk(testRepo, chunkID(uint64(i)))
				if err != nil || !ok || ch != testChunk(uint64(i)) {
					t.Fatalf("chunk %d: %+v %v %v", i, ch, ok, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	readAll()
	before := tableRSS(t, dir)
	dropTablePages(dir, levels)
	after := tableRSS(t, dir)
	t.Logf("tables' resident pages: %d KiB, %d KiB after the drop", before>>10, after>>10)
	if before < 1<<20 || after > before/8 {
		t.Errorf("tables' resident pages %d KiB, %d KiB after the drop: want over 1024, then under an eighth", before>>10, after>>10)
	}
	readAll() // the data is still there
}

// tableRSS sums the resident pages of this process's mappings of the
// table files in dir.
func tableRSS(t *testing.T, dir string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir, _ = filepath.EvalSymlinks(dir)
	var sum int64
	in := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && strings.HasPrefix(fields[5], dir+"/") && strings.HasSuffix(fields[5], ".sst")
		} else if in && fields[0] == "Rss:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			sum += kb << 10
		}
	}
	return sum
}
