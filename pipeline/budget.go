package pipeline

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/volback/volback/chunkstore"
)

// Budget is the CPU work a process allows at once, shared by every
// pipeline it runs: each hash, compression or decode holds a token, so four
// backups started together take turns on the cores instead of
// oversubscribing them (and each one's buffers stay few).
//
// It also bounds the pack buffers (8 MiB each) all backups hold: each
// backup has one of its own to fill, and they share one more for a pack
// being written (one backup alone fills one while the other is written;
// a third made a 2 GiB backup no faster, and cost 8 MiB of RSS).
//
// And it bounds the read blocks (1 MiB each) all backups fill from their
// volumes: two per CPU and two more, what one backup needs to keep its
// hashers busy, whatever the number of backups.
//
// The buffers of both are kept for reuse while a backup runs, and let go
// when none does. Not a sync.Pool: every GC empties one, and a backup
// near the soft memory limit collects every few MiB (see
// chunkstore.PackSlots).
type Budget struct {
	tokens chan struct{}
	packs  *chunkstore.PackSlots
	blocks chan struct{}
	free   chan *block  // read blocks not in use
	made   atomic.Int64 // read blocks allocated (the tests check they are reused)

	mu    sync.Mutex
	users int // pipelines running: the buffers go when the last one ends
}

// NewBudget allows n CPU-heavy steps at once (at least one; 0 means one
// per CPU).
func NewBudget(n int) *Budget {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	blocks := 2*n + 2
	return &Budget{tokens: make(chan struct{}, n), packs: chunkstore.NewPackSlots(packBuffers),
		blocks: make(chan struct{}, blocks), free: make(chan *block, blocks)}
}

// Size is how many steps may run at once.
func (b *Budget) Size() int { return cap(b.tokens) }

// acquire waits for a token; it fails only when ctx is done.
func (b *Budget) acquire(ctx context.Context) error {
	select {
	case b.tokens <- struct{}{}:
		return nil
	default:
	}
	select {
	case b.tokens <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (b *Budget) release() { <-b.tokens }

// block waits for a read block of size bytes; it fails only when ctx is
// done. Give it back with putBlock.
func (b *Budget) block(ctx context.Context, size int) (*block, error) {
	select {
	case b.blocks <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	select {
	case v := <-b.free:
		if cap(v.buf) >= size {
			v.buf = v.buf[:size]
			return v, nil
		}
	default:
	}
	b.made.Add(1)
	return &block{buf: make([]byte, max(size, readBlock))[:size]}, nil
}

func (b *Budget) putBlock(blk *block) {
	select {
	case b.free <- blk:
	default:
	}
	<-b.blocks
}

// enter counts a pipeline that uses the budget's buffers; leave lets the
// kept buffers go when the last one ends, so an idle owner holds none.
func (b *Budget) enter() {
	b.mu.Lock()
	b.users++
	b.mu.Unlock()
}

func (b *Budget) leave() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.users--; b.users > 0 {
		return
	}
	b.packs.Drain()
	for {
		select {
		case <-b.free:
		default:
			return
		}
	}
}

// packBuffers is how many pack buffers the backups of a budget share
// besides each one's own.
const packBuffers = 1

// orDefault is b, or a private budget of one token per CPU.
func (b *Budget) orDefault() *Budget {
	if b == nil {
		return NewBudget(0)
	}
	return b
}
