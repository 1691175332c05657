package pipeline

import (
	"context"
	"runtime"
)

// Budget is the CPU work a process allows at once, shared by every
// pipeline it runs: each hash, compression or decode holds a token, so four
// backups started together take turns on the cores instead of
// oversubscribing them (and each one's buffers stay few).
//
// It also bounds the pack buffers (8 MiB each) all backups hold to what
// one backup needs, one filling and two uploading: backups started
// together share the cores anyway, and a pack waits only for another to
// be written.
type Budget struct {
	tokens chan struct{}
	packs  chan struct{}
}

// NewBudget allows n CPU-heavy steps at once (at least one; 0 means one
// per CPU).
func NewBudget(n int) *Budget {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return &Budget{tokens: make(chan struct{}, n), packs: make(chan struct{}, packBuffers)}
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

// packBuffers is how many pack buffers a budget allows.
const packBuffers = 3

// orDefault is b, or a private budget of one token per CPU.
func (b *Budget) orDefault() *Budget {
	if b == nil {
		return NewBudget(0)
	}
	return b
}
