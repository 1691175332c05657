package pipeline

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fillFunc adapts a func to filler for tests.
type fillFunc func(id ID, buf []byte) ([]byte, error)

func (f fillFunc) fill(id ID, buf []byte) ([]byte, error) { return f(id, buf) }

// cacheGet acquires id and returns a copy of its bytes.
func cacheGet(t *testing.T, c *Cache, id ID, size int, f fillFunc) []byte {
	t.Helper()
	e, err := c.acquire(context.Background(), id, size, f)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Clone(e.data)
	c.release(e)
	return data
}

func TestCacheLRU(t *testing.T) {
	c := NewCache(100 << 10) // room for six 16 KiB chunks
	var fetches atomic.Int64
	fill := fillFunc(func(id ID, buf []byte) ([]byte, error) {
		fetches.Add(1)
		copy(buf, id[:])
		return buf, nil
	})
	get := func(i int) {
		id := Sum([]byte{byte(i)})
		if data := cacheGet(t, c, id, 16<<10, fill); len(data) != 16<<10 || !bytes.Equal(data[:len(id)], id[:]) {
			t.Fatalf("chunk %d: wrong bytes", i)
		}
	}
	for i := range 6 {
		get(i)
	}
	get(0) // 0 is now the most recent; 1 the least
	get(6) // evicts 1
	if fetches.Load() != 7 {
		t.Fatalf("%d fetches, want 7", fetches.Load())
	}
	if !c.Contains(Sum([]byte{0})) || c.Contains(Sum([]byte{1})) || !c.Contains(Sum([]byte{6})) {
		t.Fatal("LRU evicted the wrong chunk")
	}
	sh := &c.shards[0]
	if sh.used > sh.max || len(c.shards) != 1 {
		t.Fatalf("used %d of %d in %d shards", sh.used, sh.max, len(c.shards))
	}
	// A chunk bigger than the cache is returned but not kept.
	big := Sum([]byte("big"))
	if data := cacheGet(t, c, big, 200<<10, fill); len(data) != 200<<10 || c.Contains(big) {
		t.Fatal("oversized chunk cached")
	}
	if n := len(NewCache(1 << 30).shards); n != 16 {
		t.Fatalf("1 GiB cache has %d shards", n)
	}
}

// TestCacheRecycles: an evicted chunk that a reader still holds keeps its
// bytes until released; after that its buffer is reused, so a stream of
// misses allocates no new buffers.
func TestCacheRecycles(t *testing.T) {
	c := NewCache(64 << 10) // four 16 KiB chunks
	ctx := context.Background()
	fill := fillFunc(func(id ID, buf []byte) ([]byte, error) {
		for i := range buf {
			buf[i] = id[i%len(id)]
		}
		return buf, nil
	})
	held, err := c.acquire(ctx, Sum([]byte("held")), 16<<10, fill)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(held.data)
	bufs := map[*byte]bool{}
	for i := range 100 {
		e, err := c.acquire(ctx, Sum([]byte{byte(i)}), 16<<10, fill)
		if err != nil {
			t.Fatal(err)
		}
		bufs[&(*e.buf)[0]] = true
		c.release(e)
	}
	if c.Contains(held.id) {
		t.Fatal("held chunk was not evicted by 100 others")
	}
	if !bytes.Equal(held.data, want) {
		t.Fatal("an evicted chunk's bytes changed while a reader held it")
	}
	c.release(held)
	// Four cached, one being filled, one held: six buffers in all.
	if len(bufs) > 6 {
		t.Fatalf("%d distinct buffers for 100 chunks through a 4-chunk cache", len(bufs))
	}
	sh := &c.shards[0]
	if sh.used > sh.max || sh.lru.Len() != len(sh.items) {
		t.Fatalf("used %d of %d; %d in LRU, %d in map", sh.used, sh.max, sh.lru.Len(), len(sh.items))
	}
}

func TestCacheSingleflight(t *testing.T) {
	c := NewCache(1 << 20)
	id := Sum([]byte("x"))
	var fetches atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := c.acquire(context.Background(), id, 8<<10, fillFunc(func(_ ID, buf []byte) ([]byte, error) {
				fetches.Add(1)
				<-release
				return append(buf[:0], "chunk"...), nil
			}))
			if err != nil || string(e.data) != "chunk" {
				t.Error(err)
				return
			}
			c.release(e)
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if fetches.Load() != 1 {
		t.Fatalf("%d fetches for one chunk", fetches.Load())
	}
	// Errors are shared by waiters but not cached.
	bad := Sum([]byte("bad"))
	boom := errors.New("boom")
	if _, err := c.acquire(context.Background(), bad, 8<<10, fillFunc(func(ID, []byte) ([]byte, error) { return nil, boom })); err != boom {
		t.Fatal(err)
	}
	if c.Contains(bad) {
		t.Fatal("error cached")
	}
	// A waiter whose context ends stops waiting; the fetch goes on.
	slow := Sum([]byte("slow"))
	unblock := make(chan struct{})
	go c.acquire(context.Background(), slow, 8<<10, fillFunc(func(_ ID, buf []byte) ([]byte, error) {
		<-unblock
		return buf[:1], nil
	}))
	waitFor(t, func() bool { return c.Contains(slow) }, "the slow fetch to start")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.acquire(ctx, slow, 8<<10, fillFunc(func(ID, []byte) ([]byte, error) { t.Error("second fetch"); return nil, nil })); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	close(unblock)
}
