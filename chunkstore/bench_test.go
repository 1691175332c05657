package chunkstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

func BenchmarkIsZero(b *testing.B) {
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if !IsZero(buf) {
			b.Fatal("not zero")
		}
	}
}

func BenchmarkSum(b *testing.B) {
	buf := randomBytes(rand.New(rand.NewPCG(1, 1)), 64<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Sum(buf)
	}
}

// BenchmarkSHA256 is the alternative docs/FORMAT.md weighed BLAKE3 against.
func BenchmarkSHA256(b *testing.B) {
	buf := randomBytes(rand.New(rand.NewPCG(1, 1)), 64<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		sha256.Sum256(buf)
	}
}

// nullRepo discards puts: the packer benchmark measures compression and
// packing, not a backend.
type nullRepo struct{ memRepo }

func (*nullRepo) Put(context.Context, string, []byte) error { return nil }

// BenchmarkPackerAdd adds 64 KiB chunks from GOMAXPROCS goroutines, as the
// backup workers do (hashing excluded; IDs are counters so none dedup).
func BenchmarkPackerAdd(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	data := map[string][]byte{
		"random": randomBytes(r, 64<<10),
		"zero":   make([]byte, 64<<10),
		"text":   textBytes(r, 64<<10),
	}
	for _, kind := range []string{"random", "zero", "text"} {
		for _, level := range []int{0, 1, 3} {
			b.Run(kind+"/level"+string(rune('0'+level)), func(b *testing.B) {
				s := &Store{be: &nullRepo{}, cfg: Config{ChunkSize: 64 << 10}}
				p := s.NewPacker(context.Background(), Compression{Level: level}, PackerOptions{Uploaders: 2})
				raw := data[kind]
				var next atomic.Uint64
				var stored atomic.Int64
				b.SetBytes(int64(len(raw)))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var id ID
					for pb.Next() {
						binary.LittleEndian.PutUint64(id[:], next.Add(1))
						_, n, err := p.Add(id, raw)
						if err != nil {
							b.Error(err)
							return
						}
						stored.Add(int64(n))
					}
				})
				if err := p.Close(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(stored.Load())/float64(b.N*len(raw)), "stored/raw")
			})
		}
	}
}

// BenchmarkImageReadSequential reads a 64 MiB text-like image (64 KiB
// chunks, zstd level 1) sequentially in 1 MiB reads with an empty cache,
// so every chunk is read, decompressed and verified.
func BenchmarkEncodeBlob(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, kind := range []string{"random", "text"} {
		raw := randomBytes(r, 64<<10)
		if kind == "text" {
			raw = textBytes(r, 64<<10)
		}
		for _, level := range []int{0, 1, 3, 7} {
			b.Run(kind+"/level"+string(rune('0'+level)), func(b *testing.B) {
				dst := make([]byte, 0, 80<<10)
				b.SetBytes(int64(len(raw)))
				for b.Loop() {
					dst = EncodeBlob(dst[:0], raw, Compression{Level: level})
				}
			})
		}
	}
}
