package index

import (
	"os"
	"path/filepath"
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
// and made backups slower when used on every table; it is used only on
// the tables a compaction is still writing (in no level yet), which
// otherwise held 15-20 MiB more at the W8-shaped backup's peak.

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
	levels := c.tables
	dir, err := filepath.Abs(c.dir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if tablePagesEvery <= 0 || levels == nil || err != nil {
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
				dropTablePages(dir, levels)
				last = fileRSS()
			} else {
				last = min(last, now)
			}
		}
	}
}

// dropTablePages drops the mapped pages of every table in the levels. Each
// table is held by a reference while it is advised, so it cannot be
// unmapped (and its addresses reused) meanwhile. The tables a compaction
// is still writing are in no level yet; their mappings, found in
// /proc/self/maps, are paged out instead (MADV_PAGEOUT), which is safe
// whatever is mapped there by then: it never changes memory's contents.
func dropTablePages(dir string, levels []levelTables) {
	var held []*table.Table
	for _, l := range levels {
		l.mu.RLock()
		for _, t := range *l.tables {
			t.IncrRef()
			held = append(held, t)
		}
		l.mu.RUnlock()
	}
	inLevels := make(map[uintptr]bool, len(held))
	for _, t := range held {
		if t.MmapFile != nil && len(t.Data) > 0 {
			unix.Madvise(t.Data, unix.MADV_DONTNEED)
			inLevels[uintptr(unsafe.Pointer(&t.Data[0]))] = true
		}
	}
	pageOutOthers(dir, inLevels)
	for _, t := range held {
		t.DecrRef()
	}
}

// lookupsPerDrop is how many lookups ChunksOf makes between drops of the
// tables' data pages. Locating a segment's chunks looks up keys spread
// over the whole catalog, a few pages each, and the kernel maps up to 64
// KiB around every page faulted in: W8's mount, 1024 lookups per segment
// in a 31 MiB catalog, mapped 28 MiB of table pages at each segment,
// faster than the periodic check can drop them.
const lookupsPerDrop = 32

// smallTables is the size of catalog whose pages ChunksOf leaves mapped:
// mapping all of it costs little RSS, and dropping costs the lookups
// after each drop their faults again (BenchmarkSegmentLookup: 2.2-3.3 µs
// a lookup kept, 5.9-7.8 µs dropped every 32).
const smallTables = 8 << 20

// largeTables reports whether the tables are over smallTables, so that
// ChunksOf drops their pages as it goes.
func largeTables(levels []levelTables) bool {
	var size int64
	for _, l := range levels {
		l.mu.RLock()
		for _, t := range *l.tables {
			size += t.Size()
		}
		l.mu.RUnlock()
	}
	return size > smallTables
}

// dropDataPages drops the mapped pages of the tables' data blocks, keeping
// each table's tail (block index and bloom filter, read by every lookup)
// mapped. Unlike dropTablePages it never reads /proc: bulk lookups call
// it every lookupsPerDrop keys.
func dropDataPages(levels []levelTables) {
	page := os.Getpagesize()
	for _, l := range levels {
		l.mu.RLock()
		for _, t := range *l.tables {
			end := (int(t.Size()) - t.IndexSize() - 2*page) &^ (page - 1)
			if t.MmapFile != nil && end > 0 && end <= len(t.Data) {
				unix.Madvise(t.Data[:end], unix.MADV_DONTNEED)
			}
		}
		l.mu.RUnlock()
	}
}

// pageOutOthers pages out the mappings of table files under dir that
// start at none of the addresses in skip.
func pageOutOthers(dir string, skip map[uintptr]bool) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.IndexByte(line, '/')
		if i < 0 || !strings.HasSuffix(line, ".sst") || !strings.HasPrefix(line[i:], dir+"/") {
			continue
		}
		lo, hi, _ := strings.Cut(strings.Fields(line)[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start || skip[uintptr(start)] {
			continue
		}
		unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT)
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
