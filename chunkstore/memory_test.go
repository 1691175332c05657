package chunkstore

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// TestEncoderMemory checks the estimate against what the encoders really
// hold: never below it by more than a few MiB (the soft memory limit is
// sized from it), nor far above.
func TestEncoderMemory(t *testing.T) {
	data := make([]byte, 64<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = "abcdefghij "[r.IntN(11)]
	}
	for _, level := range []int{1, 3, 7, 19} {
		encMu.Lock()
		clear(encoders)
		encMu.Unlock()
		settle() // earlier tests' garbage, pooled buffers included
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		e := encoderFor(level, len(data))
		var wg sync.WaitGroup
		for range 2 * runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 4 {
					e.EncodeAll(data, nil)
				}
			}()
		}
		wg.Wait()
		settle()
		runtime.ReadMemStats(&after)
		held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		est := EncoderMemory(level, len(data))
		t.Logf("level %d: encoders hold %.1f MiB, estimate %.1f MiB", level, float64(held)/(1<<20), float64(est)/(1<<20))
		if held > est+4<<20 || est > 2*held+4<<20 {
			t.Errorf("level %d: encoders hold %d bytes, EncoderMemory says %d", level, held, est)
		}
	}
	encMu.Lock()
	clear(encoders)
	encMu.Unlock()
}

// settle collects twice: sync.Pool contents survive one collection.
func settle() {
	runtime.GC()
	runtime.GC()
}

// TestPackerBuffersOutliveGC: a packer reuses its pack buffers however
// often the GC runs. A backup near the soft memory limit collects every
// few MiB; with buffers in a sync.Pool (emptied by each collection) it
// allocated and zeroed a new 8 MiB buffer for almost every pack.
func TestPackerBuffersOutliveGC(t *testing.T) {
	const packs = 12
	s := &Store{be: &nullRepo{}, cfg: Config{ChunkSize: 64 << 10}}
	raw := randomBytes(rand.New(rand.NewPCG(4, 4)), 64<<10) // incompressible: ~128 chunks a pack
	p := s.NewPacker(t.Context(), Compression{Level: 1}, PackerOptions{Uploaders: 2})
	var id ID
	for i := range packs * packTarget / len(raw) {
		binary.LittleEndian.PutUint64(id[:], uint64(i)+1)
		if _, _, err := p.Add(id, raw); err != nil {
			t.Fatal(err)
		}
		if i%32 == 0 {
			runtime.GC()
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// One per token: the packer's own and its two slots.
	t.Logf("%d packs written with %d buffers", p.nextSeq, p.made)
	if limit := 1 + cap(p.slots.tokens); p.nextSeq < packs || p.made > limit {
		t.Errorf("%d packs allocated %d buffers (at most %d): pack buffers are not reused", p.nextSeq, p.made, limit)
	}
}
