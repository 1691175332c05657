package pipeline

import (
	"context"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/volback/volback/chunkstore"
)

// gcSource collects garbage before every read, as a backup near the soft
// memory limit does every few MiB.
type gcSource struct{ *byteSource }

func (s *gcSource) ReadAt(p []byte, off int64) (int, error) {
	runtime.GC()
	return s.byteSource.ReadAt(p, off)
}

// TestBackupBuffersOutliveGC: a backup reuses its read blocks and pack
// buffers however often the GC runs. With both in sync.Pools (emptied by
// every collection) a backup of a large catalog, whose heap sits near the
// soft limit, allocated and zeroed a 1 MiB block per read and an 8 MiB
// buffer per pack.
func TestBackupBuffersOutliveGC(t *testing.T) {
	const size = 128 << 20
	cs := chunkstore.DefaultChunkSize
	s, _ := newTestStore(t, cs)
	vol := randomBytes(rand.New(rand.NewPCG(9, 9)), size) // incompressible: 16 packs
	src := &gcSource{byteSource: newSource(vol)}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Backup(context.Background(), BackupInput{Store: s, Catalog: newMapCatalog(), BackupID: "b", Source: src,
		Size: size, Read: []Range{{0, size / int64(cs)}}, Compression: chunkstore.Compression{Level: 1}})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// The mem repository keeps a copy of every pack (128 MiB); read blocks
	// (a few) and pack buffers (two or three) come on top, with the
	// manifest and the hashers' scratch.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("backup of %d MiB: %.1f MiB allocated", size>>20, float64(alloc)/(1<<20))
	if limit := uint64(size + 48<<20); alloc > limit {
		t.Errorf("a backup of %d bytes allocated %d (limit %d): read blocks or pack buffers are not reused", size, alloc, limit)
	}
}
