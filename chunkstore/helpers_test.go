package chunkstore

import (
	"context"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"testing"
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

// collector is a CommitFunc that keeps every committed entry.
type collector struct {
	mu      sync.Mutex
	entries []PackEntry
	packs   []ID
}

func (c *collector) commit(_ context.Context, pack ID, e []PackEntry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, e...)
	c.packs = append(c.packs, pack)
	return nil
}

func (c *collector) all() []PackEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]PackEntry(nil), c.entries...)
}

func newTestStore(t testing.TB, chunkSize int) (*Store, *memRepo) {
	t.Helper()
	be := newMemRepo()
	s, err := Init(context.Background(), be, chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	return s, be
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
