package volume

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// disk is what a Gatherer writes to: the bytes, and every write it got.
type disk struct {
	mu     sync.Mutex
	b      []byte
	writes [][2]int64 // off, len
	fail   error
}

func (d *disk) write(off int64, p []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return d.fail
	}
	copy(d.b[off:], p)
	d.writes = append(d.writes, [2]int64{off, int64(len(p))})
	return nil
}

// TestGathererModel: seeded random writes (aligned chunks, odd pieces,
// rewrites of one range, whole segments) and flushes of random ranges,
// checked against a model after every step: a flushed range reads as the
// model, no write crosses a segment, and a segment written whole in
// chunks reaches the disk as one write.
func TestGathererModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			const seg = 64 << 10
			size := int64(seg*(4+r.IntN(8)) - 512*r.IntN(3)) // a short last segment, sometimes
			d := &disk{b: make([]byte, size)}
			g := NewGatherer(size, seg, 1+r.IntN(4), d.write, nil)
			model := make([]byte, size)
			for step := range 300 {
				switch k := r.IntN(10); {
				case k < 7: // a write
					var off, n int64
					switch r.IntN(3) {
					case 0: // a 4 KiB-aligned chunk
						off, n = int64(r.IntN(int(size/4096)))*4096, 4096*int64(1+r.IntN(4))
					case 1: // anything
						off, n = r.Int64N(size), 1+r.Int64N(3*seg)
					default: // a whole segment
						off, n = int64(r.IntN(int(size/seg)))*seg, seg
					}
					n = min(n, size-off)
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(r.IntN(255) + 1)
					}
					if got, err := g.WriteAt(p, off); err != nil || got != len(p) {
						t.Fatalf("step %d: write [%d, %d): %d, %v", step, off, off+n, got, err)
					}
					copy(model[off:], p)
				default: // a flush
					off, n := r.Int64N(size), r.Int64N(size)
					if r.IntN(3) == 0 {
						off, n = 0, -1
					}
					if err := g.Flush(off, n); err != nil {
						t.Fatal(err)
					}
					if n < 0 {
						off, n = 0, size
					}
					end := min(off+n, size)
					if !bytes.Equal(d.b[off:end], model[off:end]) {
						t.Fatalf("step %d: after a flush of [%d, %d) the disk differs from the model", step, off, end)
					}
				}
				for _, w := range d.writes {
					if w[0]/seg != (w[0]+w[1]-1)/seg {
						t.Fatalf("step %d: write [%d, %d) crosses a segment", step, w[0], w[0]+w[1])
					}
				}
			}
			if err := g.Flush(0, -1); err != nil || !bytes.Equal(d.b, model) {
				t.Fatalf("final flush: %v, equal %v", err, bytes.Equal(d.b, model))
			}
		})
	}
}

// TestGathererWholeSegments: 64 KiB chunks written in order, from 4
// goroutines, reach the disk as one write per 1 MiB segment, made by the
// write that completed it.
func TestGathererWholeSegments(t *testing.T) {
	const seg, chunk, size = 1 << 20, 64 << 10, 8 << 20
	d := &disk{b: make([]byte, size)}
	g := NewGatherer(size, seg, 8, d.write, nil)
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*7 + i>>16)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for off := int64(w * chunk); off < size; off += 4 * chunk {
				if _, err := g.WriteAt(want[off:off+chunk], off); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if len(d.writes) != size/seg {
		t.Fatalf("%d segments written by the writes that completed them, want all %d", len(d.writes), size/seg)
	}
	if err := g.Flush(0, -1); err != nil || !bytes.Equal(d.b, want) {
		t.Fatalf("flush: %v, equal %v", err, bytes.Equal(d.b, want))
	}
	if len(d.writes) != size/seg {
		t.Fatalf("%d writes for %d segments: %v", len(d.writes), size/seg, d.writes)
	}
}

// TestGathererFailure: a failed write is returned by the call that
// flushes it and by every call after, and Fail records an outside one.
func TestGathererFailure(t *testing.T) {
	boom := errors.New("disk on fire")
	d := &disk{b: make([]byte, 4<<20), fail: boom}
	g := NewGatherer(4<<20, 1<<20, 4, d.write, nil)
	if _, err := g.WriteAt(make([]byte, 100), 0); err != nil {
		t.Fatalf("a gathered write failed before its flush: %v", err)
	}
	if err := g.Flush(0, -1); !errors.Is(err, boom) {
		t.Fatalf("flush: %v", err)
	}
	d.fail = nil
	if _, err := g.WriteAt(make([]byte, 1<<20), 1<<20); !errors.Is(err, boom) {
		t.Fatalf("a write after the failure: %v", err)
	}
	g2 := NewGatherer(4<<20, 1<<20, 4, d.write, nil)
	if err := g2.Fail(boom); !errors.Is(err, boom) || !errors.Is(g2.Flush(0, -1), boom) {
		t.Fatal("Fail was not recorded")
	}
}
