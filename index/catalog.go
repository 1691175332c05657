package index

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options tune Badger for bounded memory.
type Options struct {
	// InMemory is for unit tests of code above the catalog only: dir is
	// ignored, nothing is written to disk and there is no lock.
	InMemory bool
}

// Catalog is an open catalog. One process owns it at a time.
type Catalog struct {
	db   *badger.DB
	dir  string
	lock *os.File // flocked volback.lock; nil when InMemory

	stopGC    chan struct{}
	tables    []levelTables // Badger's levels (pages.go); nil in memory
	gcDone    sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

const (
	lockFile       = "volback.lock"
	updateAttempts = 5                // Update tries on ErrConflict
	vlogGCEvery    = 10 * time.Minute // long-lived owners (serve, mount)
)

// badgerOptions keeps Badger small: the whole process must stay under
// ~96 MiB RSS while a backup writes tens of thousands of chunk entries.
// The big consumers are the memtables (each a Go-heap arena plus an mmapped
// WAL of about MemTableSize) and the mmapped tables. There is no block
// cache: with neither compression nor encryption a block is read straight
// from the mmapped table, and a cache only adds its own bookkeeping (as
// Badger's documentation of BlockCacheSize says). Measured: a lookup of
// an existing chunk 3.9 µs against 4.9-5.9 µs with a 4 MiB cache
// (BenchmarkChunkLookup), and one less 4 MiB of heap.
func badgerOptions(dir string, inMemory bool) badger.Options {
	o := badger.DefaultOptions(dir)
	if inMemory {
		o = badger.DefaultOptions("").WithInMemory(true)
	}
	// Every level's tables the same size: a compaction keeps up to 8 plus
	// its splits table builders in memory, each twice its level's table
	// size, and with Badger's default (×2 per level below the base) that
	// grew with the catalog. W8-shaped backup (1 TiB sparse, 33 MiB
	// catalog): live heap up to 89-93 MB and 1900-2800 collections, against
	// 69-81 MB and 1100-1200 with this.
	o.TableSizeMultiplier = 1
	return o.
		WithMemTableSize(4 << 20).      // txn limit = 15% of this: ~630 KiB, see MaxBatch
		WithNumMemtables(2).            // one taking writes, one being flushed
		WithNumLevelZeroTables(3).      // flush L0 into L1 early
		WithNumLevelZeroTablesStall(8). // bounded L0 under a write burst
		WithBaseTableSize(2 << 20).
		WithBlockCacheSize(0). // see above
		WithIndexCacheSize(2 << 20).
		WithCompression(options.None). // chunk ids are random; reads stay zero-copy from mmap
		WithNumCompactors(2).
		WithValueLogFileSize(64 << 20).
		WithValueThreshold(1 << 10). // chunk entries (50 B) and most records stay in the LSM tree
		WithMetricsEnabled(false).
		WithSyncWrites(true). // Update returns only once the commit is on disk
		WithDetectConflicts(true).
		WithLogger(quietLogger{})
}

// quietLogger drops Badger's info/debug/warning chatter (it would land in
// every CLI command's output) and keeps errors.
type quietLogger struct{}

func (quietLogger) Errorf(f string, a ...interface{}) {
	log.Printf("volback: catalog: "+strings.TrimSuffix(f, "\n"), a...)
}
func (quietLogger) Warningf(string, ...interface{}) {}
func (quietLogger) Infof(string, ...interface{})    {}
func (quietLogger) Debugf(string, ...interface{})   {}

// Open opens (creating when absent) the catalog in dir, checks the schema
// version, and returns a clear error when another process holds it.
func Open(dir string, opt Options) (*Catalog, error) {
	c := &Catalog{dir: dir, stopGC: make(chan struct{})}
	if opt.InMemory {
		c.dir = "(in memory)"
	} else {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create catalog directory: %w", err)
		}
		lock, err := lockDir(dir)
		if err != nil {
			return nil, err
		}
		c.lock = lock
	}
	if !opt.InMemory {
		if err := dropEmptyLogs(dir); err != nil {
			c.unlock()
			return nil, err
		}
	}
	db, err := badger.Open(badgerOptions(dir, opt.InMemory))
	if err != nil {
		c.unlock()
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			// A non-volback process (or an old one without volback.lock).
			return nil, fmt.Errorf("%w: another process owns the catalog at %s: %v", ErrLocked, dir, err)
		}
		return nil, fmt.Errorf("open catalog at %s: %w", dir, err)
	}
	c.db = db
	if err := c.checkSchema(); err != nil {
		db.Close()
		c.unlock()
		return nil, err
	}
	if !opt.InMemory {
		c.tables = badgerLevels(db)
		c.gcDone.Add(2)
		go c.vlogGC()
		go c.releaseTablePages()
	}
	return c, nil
}

// lockDir takes an exclusive flock on dir/volback.lock before Badger
// touches the directory. Badger has its own lock, but its error cannot be
// told apart from other failures; ours also records the owner's pid.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open catalog lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			owner := ""
			if b, rerr := os.ReadFile(path); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
				owner = " (pid " + strings.TrimSpace(string(b)) + ")"
			}
			return nil, fmt.Errorf("%w: another volback process%s owns the catalog at %s; talk to it through its socket or stop it",
				ErrLocked, owner, dir)
		}
		return nil, fmt.Errorf("lock catalog %s: %w", path, err)
	}
	// The pid is advisory, for the message above.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// dropEmptyLogs removes zero-length value-log and memtable files. A
// process killed while Badger creates one leaves it empty (not even its
// header), and Badger then refuses to open the catalog once ("Create a
// new file"). An empty log holds no entry, so nothing is lost.
func dropEmptyLogs(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read catalog directory %s: %w", dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !(strings.HasSuffix(name, ".vlog") || strings.HasSuffix(name, ".mem")) {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Size() == 0 {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("remove the empty log %s left by a crash: %w", filepath.Join(dir, name), err)
			}
		}
	}
	return nil
}

// LockHolder is the pid the process holding (or that last held) the lock
// of the catalog in dir wrote into it, or 0 if none can be read. Advisory:
// it tells waiting processes whether the holder changed.
func LockHolder(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, lockFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (c *Catalog) unlock() {
	if c.lock != nil {
		c.lock.Close() // closing the last fd drops the flock
		c.lock = nil
	}
}

// checkSchema writes the version into a new catalog, upgrades version 1,
// and refuses any other.
func (c *Catalog) checkSchema() error {
	return c.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keySchema))
		if errors.Is(err, badger.ErrKeyNotFound) {
			it := txn.NewIterator(badger.IteratorOptions{})
			it.Rewind()
			empty := !it.Valid()
			it.Close()
			if !empty {
				return fmt.Errorf("%w: catalog at %s has records but no schema version: move it aside and run 'volback catalog-rebuild'",
					ErrSchema, c.dir)
			}
			return txn.Set([]byte(keySchema), []byte(strconv.Itoa(SchemaVersion)))
		}
		if err != nil {
			return fmt.Errorf("read catalog schema at %s: %w", c.dir, err)
		}
		raw, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("read catalog schema at %s: %w", c.dir, err)
		}
		v, err := strconv.Atoi(string(raw))
		if err != nil {
			return fmt.Errorf("%w: catalog at %s has unreadable schema version %q: move it aside and run 'volback catalog-rebuild'",
				ErrSchema, c.dir, raw)
		}
		if v == SchemaVersion {
			return nil
		}
		if v == 1 { // every backup counted in full: valid as version 2
			return txn.Set([]byte(keySchema), []byte(strconv.Itoa(SchemaVersion)))
		}
		todo := "move it aside and run 'volback catalog-rebuild' to rebuild it from the repositories"
		if v > SchemaVersion {
			todo = "upgrade volback, or " + todo
		}
		return fmt.Errorf("%w: catalog at %s has schema version %d, this volback reads version %d: %s",
			ErrSchema, c.dir, v, SchemaVersion, todo)
	})
}

// vlogGC reclaims value-log space left by rewritten large records (values
// over ValueThreshold). Most entries live in the LSM tree, so this is rare.
func (c *Catalog) vlogGC() {
	defer c.gcDone.Done()
	t := time.NewTicker(vlogGCEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stopGC:
			return
		case <-t.C:
			for c.db.RunValueLogGC(0.5) == nil {
			}
		}
	}
}

// Close flushes and releases the catalog. Calling it again returns the
// first result.
func (c *Catalog) Close() error {
	c.closeOnce.Do(func() {
		close(c.stopGC)
		c.gcDone.Wait()
		if err := c.db.Close(); err != nil {
			c.closeErr = fmt.Errorf("close catalog at %s: %w", c.dir, err)
		}
		c.unlock()
	})
	return c.closeErr
}

// View runs fn in a read-only transaction; Update in a read-write one that
// commits atomically when fn returns nil.
func (c *Catalog) View(fn func(*Tx) error) error {
	return c.db.View(func(txn *badger.Txn) error {
		return fn(&Tx{txn: txn, tables: c.tables})
	})
}

// Update commits durably (SyncWrites) before returning. On a write
// conflict with a concurrent Update it reruns fn, up to 5 times in all, so
// fn must not have side effects outside the transaction. Nothing is written
// when fn returns an error.
func (c *Catalog) Update(fn func(*Tx) error) error {
	var err error
	for range updateAttempts {
		err = c.db.Update(func(txn *badger.Txn) error {
			return fn(&Tx{txn: txn, tables: c.tables})
		})
		if !errors.Is(err, badger.ErrConflict) {
			break
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrConflict):
		return fmt.Errorf("catalog update conflicted %d times with concurrent updates: %w", updateAttempts, err)
	case errors.Is(err, badger.ErrTxnTooBig) && !errors.Is(err, ErrTxnTooBig):
		return fmt.Errorf("%w: %v", ErrTxnTooBig, err)
	}
	return err
}
