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

// TestBackupBuffersOutliveGC: a backup reuses its read blocks however
// often the GC runs. With them in a sync.Pool (emptied by every
// collection) a backup of a large catalog, whose heap sits near the soft
// limit, allocated and zeroed a 1 MiB block for most reads. (The pack
// buffers' own test is chunkstore's TestPackerBuffersOutliveGC.)
func TestBackupBuffersOutliveGC(t *testing.T) {
	const size = 64 << 20
	cs := chunkstore.DefaultChunkSize
	s, _ := newTestStore(t, cs)
	vol := randomBytes(rand.New(rand.NewPCG(9, 9)), size)
	src := &gcSource{byteSource: newSource(vol)}
	budget := NewBudget(2)
	_, err := Backup(context.Background(), BackupInput{Store: s, Catalog: newMapCatalog(), BackupID: "b", Source: src,
		Size: size, Read: []Range{{0, size / int64(cs)}}, Compression: chunkstore.Compression{Level: 1}, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	reads := src.reads.Load()
	t.Logf("%d reads with %d blocks", reads, budget.made.Load())
	if made := budget.made.Load(); reads < 64 || made > int64(cap(budget.blocks)) {
		t.Errorf("%d reads allocated %d read blocks (at most %d): blocks are not reused", reads, made, cap(budget.blocks))
	}
}
