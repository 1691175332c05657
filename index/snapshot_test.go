package index

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func putChunks(t *testing.T, c *Catalog, from, to uint64) {
	t.Helper()
	if err := c.Update(func(tx *Tx) error {
		for n := from; n < to; n++ {
			if err := tx.PutChunk(testRepo, chunkID(n), testChunk(n)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func hasChunk(t *testing.T, s *Snapshots, n uint64) bool {
	t.Helper()
	var found bool
	err := s.View(func(tx *Tx) error {
		c, ok, err := tx.Chunk(testRepo, chunkID(n))
		if ok && c != testChunk(n) {
			t.Errorf("chunk %d reads back as %+v, want %+v", n, c, testChunk(n))
		}
		found = ok
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// A snapshot sees what was committed before it, and a later one what was
// committed since; it is read-only.
func TestSnapshotsFollowCommits(t *testing.T) {
	c := openT(t, t.TempDir())
	putChunks(t, c, 0, 10)
	s := c.Snapshots(time.Millisecond)
	defer s.Close()
	for n := range uint64(10) {
		if !hasChunk(t, s, n) {
			t.Fatalf("chunk %d committed before the snapshots is not seen", n)
		}
	}
	if hasChunk(t, s, 10) {
		t.Fatal("a chunk never committed is seen")
	}
	putChunks(t, c, 10, 11)
	deadline := time.Now().Add(10 * time.Second)
	for !hasChunk(t, s, 10) {
		if time.Now().After(deadline) {
			t.Fatal("a chunk committed 10 s ago is still not seen: the snapshot is not renewed")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.View(func(tx *Tx) error { return tx.PutChunk(testRepo, chunkID(99), testChunk(99)) }); err == nil {
		t.Fatal("a write through a snapshot was accepted")
	}
}

// Views on many goroutines while snapshots are replaced every 100 µs and
// commits land: every view reads a whole snapshot (what was committed
// before the first is always there), a goroutine never sees a chunk
// disappear (snapshots only move forward), and nothing races (-race).
func TestSnapshotsConcurrent(t *testing.T) {
	c := openT(t, t.TempDir())
	putChunks(t, c, 0, 100)
	s := c.Snapshots(100 * time.Microsecond)
	var committed atomic.Uint64
	committed.Store(100)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := uint64(100); n < 300; n++ {
			putChunks(t, c, n, n+1)
			committed.Store(n + 1)
		}
		close(stop)
	}()
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := uint64(0) // chunks below this were seen by this goroutine
			for k := uint64(g); ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if n := k % 100; !hasChunk(t, s, n) {
					t.Errorf("chunk %d, committed before the snapshots, missing", n)
					return
				}
				for seen < committed.Load() && hasChunk(t, s, seen) {
					seen++
				}
				if seen > 100 && !hasChunk(t, s, seen-1) {
					t.Errorf("chunk %d was seen, then not", seen-1)
					return
				}
			}
		}()
	}
	wg.Wait()
	s.Close()
	s.Close() // twice is fine
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// A catalog closed under open snapshots (an owner shutting down
// mid-backup) neither hangs nor panics their refresher or Close.
func TestSnapshotsOutliveCatalog(t *testing.T) {
	c, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := c.Snapshots(time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // refreshes against the closed catalog
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Snapshots.Close hangs after the catalog closed")
	}
}
