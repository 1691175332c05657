package chunkstore

import (
	"context"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

var words = []string{"volume", "backup", "chunk", "the", "of", "pack", "manifest", "record",
	"zstd", "block", "device", "snapshot", "cinder", "restore", "mount", "and", "a", "to",
	"2026-11-25", "INFO", "ERROR", "request", "id=", "status=200", "\n"}

// textBytes is log-like text that compresses roughly 3-5x.
func textBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		if r.IntN(4) == 0 {
			b = fmt.Appendf(b, "%d", r.IntN(100000))
		}
		b = append(b, ' ')
	}
	return b[:n]
}

// mapLocator is a Locator over packer results.
type mapLocator struct {
	mu sync.Mutex
	m  map[ID]Location
}

func newMapLocator(entries []PackEntry) *mapLocator {
	l := &mapLocator{m: map[ID]Location{}}
	for _, e := range entries {
		l.m[e.ID] = e.Location
	}
	return l
}

func (l *mapLocator) Locate(ctx context.Context, id ID) (Location, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	loc, ok := l.m[id]
	if !ok {
		return Location{}, fmt.Errorf("chunk %s not in catalog: %w", id, errNotInCatalog)
	}
	return loc, nil
}

var errNotInCatalog = fmt.Errorf("not in catalog")

func newTestStore(t testing.TB, chunkSize int) (*Store, *memRepo) {
	t.Helper()
	be := newMemRepo()
	s, err := Init(context.Background(), be, chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	return s, be
}

// backupVolume stores vol like a backup would: zero chunks skipped, the
// rest added concurrently through a packer. It returns the manifest and
// the pack entries.
func backupVolume(t testing.TB, s *Store, vol []byte, comp Compression) (*Manifest, []PackEntry) {
	t.Helper()
	cs := s.Config().ChunkSize
	m := NewManifest(int64(len(vol)), cs)
	p := s.NewPacker(context.Background(), comp, 2)
	ids := make([]ID, m.Chunks())
	zero := make([]bool, m.Chunks())
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	work := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c := vol[i*cs : min(len(vol), (i+1)*cs)]
				if IsZero(c) {
					zero[i] = true
					continue
				}
				ids[i] = Sum(c)
				if _, err := p.Add(ids[i], c); err != nil {
					errMu.Lock()
					firstErr = err
					errMu.Unlock()
				}
			}
		}()
	}
	for i := range m.Chunks() {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	entries, err := p.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		if !zero[i] {
			m.Set(i, ids[i])
		}
	}
	return m, entries
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func sleep() { time.Sleep(10 * time.Millisecond) }
