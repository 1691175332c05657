package index

import (
	"fmt"
	"testing"

	"github.com/volback/volback/chunkstore"
)

const benchChunks = 100_000

// loadChunks fills a fresh catalog with n chunk entries in MaxBatch commits.
func loadChunks(b *testing.B, n int) *Catalog {
	c := openT(b, b.TempDir())
	for start := 0; start < n; start += MaxBatch {
		err := c.Update(func(tx *Tx) error {
			for i := start; i < start+MaxBatch && i < n; i++ {
				if err := tx.PutChunk(testRepo, chunkID(uint64(i)), testChunk(uint64(i))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// BenchmarkChunkLookup is the dedup check of the backup path: one Get per
// chunk, in a View, against 100k entries.
func BenchmarkChunkLookup(b *testing.B) {
	c := loadChunks(b, benchChunks)
	for _, tc := range []struct {
		name string
		base uint64 // ids from base up; existing ones are below benchChunks
		want bool
	}{{"existing", 0, true}, {"missing", 1 << 40, false}} {
		b.Run(tc.name, func(b *testing.B) {
			const perView = 1000
			i := uint64(0)
			for b.Loop() {
				err := c.View(func(tx *Tx) error {
					for range perView {
						_, ok, err := tx.Chunk(testRepo, chunkID(tc.base+i*7919%benchChunks))
						if err != nil {
							return err
						}
						if ok != tc.want {
							b.Fatalf("chunk %d found=%v", i, ok)
						}
						i++
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/lookup")
		})
	}
}

// BenchmarkChunkPutBatch is one durable commit of MaxBatch new chunk
// entries plus the backup record, as a backup writes them.
func BenchmarkChunkPutBatch(b *testing.B) {
	c := openT(b, b.TempDir())
	next := uint64(0)
	for b.Loop() {
		err := c.Update(func(tx *Tx) error {
			for range MaxBatch {
				if err := tx.PutChunk(testRepo, chunkID(next), testChunk(next)); err != nil {
					return err
				}
				next++
			}
			return tx.PutBackup(&Backup{ID: "bk", Status: StatusCreating, RefsApplied: int(next)})
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(next), "ns/chunk")
}

// BenchmarkSegmentLookup locates a segment's worth of chunks (16,384 of
// the 100k, in a random order, as a segment's ids are) in one View: a Get
// each against ChunksOf's sorted seeks.
func BenchmarkSegmentLookup(b *testing.B) {
	c := loadChunks(b, benchChunks)
	ids := make([]chunkstore.ID, 16384)
	for k := range ids {
		ids[k] = chunkID(uint64(k) * 7919 % benchChunks)
	}
	b.Run("get", func(b *testing.B) {
		for b.Loop() {
			err := c.View(func(tx *Tx) error {
				for _, id := range ids {
					if _, ok, err := tx.Chunk(testRepo, id); err != nil || !ok {
						return fmt.Errorf("chunk %x: found %v, %v", id[:4], ok, err)
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/lookup")
	})
	b.Run("sorted", func(b *testing.B) {
		for b.Loop() {
			err := c.View(func(tx *Tx) error {
				return tx.ChunksOf(testRepo, ids, func(k int, _ Chunk, ok bool) error {
					if !ok {
						return fmt.Errorf("chunk %d not found", k)
					}
					return nil
				})
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/lookup")
	})
}
