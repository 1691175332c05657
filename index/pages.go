package index

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"
	"golang.org/x/sys/unix"
)

// Badger maps every table of the catalog into memory and never lets go of
// the pages it touched: each table a compaction or a memtable flush writes,
// each one a compaction reads, stays in the process's RSS until the table
// is deleted. A compaction from level 0 rewrites the whole base level (the
// chunk ids are random, so every table overlaps), so a backup's RSS grew
// by about the catalog's size (W8: 46 MiB of table pages at the peak, for
// a 33 MiB catalog). releaseTablePages drops those pages from the
// process's page tables (MADV_DONTNEED on the shared file mappings): they
// stay in the page cache, and the next lookup that needs one maps it again
// with a minor fault, no disk read. MADV_PAGEOUT would also evict them,
// and made backups slower.

// tablePagesEvery is how often the catalog reads the process's file-backed
// RSS, and tablePagesGrowth how much that may grow before the tables'
// pages are dropped.
var (
	tablePagesEvery  = 50 * time.Millisecond
	tablePagesGrowth = int64(2 << 20)
)

// levelTables are Badger's levels, each a lock and the tables it guards.
type levelTables struct {
	mu     *sync.RWMutex
	tables *[]*table.Table
}

// badgerLevels finds the levels inside db (Badger v4 does not export
// them): db.lc.levels, each a levelHandler embedding its RWMutex beside
// its tables. It returns nil if Badger's layout is not that one, and then
// nothing is released (TestReleaseTablePages fails on such an upgrade).
func badgerLevels(db *badger.DB) []levelTables {
	lc := reflect.ValueOf(db).Elem().FieldByName("lc")
	if lc.Kind() != reflect.Pointer || lc.IsNil() {
		return nil
	}
	levels := lc.Elem().FieldByName("levels")
	if levels.Kind() != reflect.Slice {
		return nil
	}
	muType, tablesType := reflect.TypeOf(sync.RWMutex{}), reflect.TypeOf([]*table.Table(nil))
	var out []levelTables
	for i := range levels.Len() {
		h := levels.Index(i)
		if h.Kind() != reflect.Pointer || h.IsNil() {
			return nil
		}
		mu, tables := h.Elem().FieldByName("RWMutex"), h.Elem().FieldByName("tables")
		if mu.Type() != muType || !tables.IsValid() || tables.Type() != tablesType {
			return nil
		}
		out = append(out, levelTables{
			mu:     (*sync.RWMutex)(unsafe.Pointer(mu.UnsafeAddr())),
			tables: (*[]*table.Table)(unsafe.Pointer(tables.UnsafeAddr())),
		})
	}
	return out
}

// releaseTablePages runs until the catalog closes.
func (c *Catalog) releaseTablePages() {
	defer c.gcDone.Done()
	levels := badgerLevels(c.db)
	if tablePagesEvery <= 0 || levels == nil {
		return
	}
	t := time.NewTicker(tablePagesEvery)
	defer t.Stop()
	last := fileRSS()
	for {
		select {
		case <-c.stopGC:
			return
		case <-t.C:
			if now := fileRSS(); now > last+tablePagesGrowth {
				dropTablePages(levels)
				last = fileRSS()
			} else {
				last = min(last, now)
			}
		}
	}
}

// dropTablePages drops the mapped pages of every table in the levels. Each
// table is held by a reference while it is advised, so it cannot be
// unmapped (and its addresses reused) meanwhile.
func dropTablePages(levels []levelTables) {
	var held []*table.Table
	for _, l := range levels {
		l.mu.RLock()
		for _, t := range *l.tables {
			t.IncrRef()
			held = append(held, t)
		}
		l.mu.RUnlock()
	}
	for _, t := range held {
		if t.MmapFile != nil && len(t.Data) > 0 {
			unix.Madvise(t.Data, unix.MADV_DONTNEED)
		}
		t.DecrRef()
	}
}

// fileRSS is the process's resident file-backed (and shared) memory in
// bytes: the third field of /proc/self/statm, in pages.
func fileRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0
	}
	n, _ := strconv.ParseInt(f[2], 10, 64)
	return n * int64(os.Getpagesize())
}
