package index

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/volback/volback/chunkstore"
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

	const n = 60_000
	dir, c := tableCatalog(t, n)
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
	// The least of three drops: Badger's own goroutines may map a few
	// pages again in between.
	after := before
	for range 3 {
		dropTablePages(dir, levels)
		after = min(after, tableRSS(t, dir))
	}
	t.Logf("tables' resident pages: %d KiB, %d KiB after the drop", before>>10, after>>10)
	if before < 1<<20 || after > before/8 {
		t.Errorf("tables' resident pages %d KiB, %d KiB after the drop: want over 1024, then under an eighth", before>>10, after>>10)
	}
	readAll() // the data is still there
}

// TestChunksOfKeepsTablePagesFew locates chunks spread over the whole
// catalog, as a mount or restore locates a segment's, and checks that
// the tables' pages mapped meanwhile stay a small part of the catalog
// (dropDataPages every lookupsPerDrop keys), and that every chunk is
// found as stored.
func TestChunksOfKeepsTablePagesFew(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	saved := tablePagesEvery
	tablePagesEvery = 0 // no periodic drops: only ChunksOf's own
	t.Cleanup(func() { tablePagesEvery = saved })
	const n = 120_000 // tables over smallTables
	dir, c := tableCatalog(t, n)
	var size int64
	for _, l := range badgerLevels(c.db) {
		for _, tb := range *l.tables {
			size += tb.Size()
		}
	}
	dropTablePages(dir, badgerLevels(c.db))
	var ids []chunkstore.ID
	for i := 0; i < n; i += 8 {
		ids = append(ids, chunkID(uint64(i)))
	}
	var peak int64
	err := c.View(func(tx *Tx) error {
		return tx.ChunksOf(testRepo, ids, func(k int, ch Chunk, ok bool) error {
			if !ok || ch != testChunk(uint64(8*k)) {
				t.Fatalf("chunk %d: %+v %v", 8*k, ch, ok)
			}
			if k%500 == 0 {
				peak = max(peak, tableRSS(t, dir))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tables %d KiB; mapped at most %d KiB while locating %d chunks", size>>10, peak>>10, len(ids))
	if size <= smallTables || peak > size/4 {
		t.Errorf("locating %d chunks mapped up to %d KiB of %d KiB of tables: want a catalog over %d KiB, and under a quarter of it mapped", len(ids), peak>>10, size>>10, smallTables>>10)
	}
}

// tableCatalog makes a catalog in a new directory holding n chunks, all
// in tables (closed, opened again and compacted).
func tableCatalog(t *testing.T, n int) (string, *Catalog) {
	t.Helper()
	dir, _ := filepath.EvalSymlinks(t.TempDir())
	c, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
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
	// Compacted now, so that no compaction writes tables while the tests
	// measure (one that did left pages a drop cannot take at once).
	if err := c.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	return dir, c
}

// tableRSS sums the resident pages of this process's mappings of the
// table files in dir (those not deleted).
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
			// Not the tables a compaction deleted that Badger has yet to
			// unmap: they leave within moments, no drop is for them.
			in = len(fields) == 6 && strings.HasPrefix(fields[5], dir+"/") && strings.HasSuffix(fields[5], ".sst")
		} else if in && fields[0] == "Rss:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			sum += kb << 10
		}
	}
	return sum
}
