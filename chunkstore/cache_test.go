package chunkstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCacheLRU(t *testing.T) {
	c := NewCache(100 << 10) // room for six 16 KiB chunks
	ctx := context.Background()
	var fetches atomic.Int64
	get := func(i int) {
		id := Sum([]byte{byte(i)})
		data, err := c.get(ctx, id, func() ([]byte, error) {
			fetches.Add(1)
			return make([]byte, 16<<10), nil
		})
		if err != nil || len(data) != 16<<10 {
			t.Fatal(err)
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
	if _, err := c.get(ctx, big, func() ([]byte, error) { return make([]byte, 200<<10), nil }); err != nil || c.Contains(big) {
		t.Fatal("oversized chunk cached")
	}
	if n := len(NewCache(1 << 30).shards); n != 16 {
		t.Fatalf("1 GiB cache has %d shards", n)
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
			data, err := c.get(context.Background(), id, func() ([]byte, error) {
				fetches.Add(1)
				<-release
				return []byte("chunk"), nil
			})
			if err != nil || string(data) != "chunk" {
				t.Error(data, err)
			}
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
	if _, err := c.get(context.Background(), bad, func() ([]byte, error) { return nil, boom }); err != boom {
		t.Fatal(err)
	}
	if c.Contains(bad) {
		t.Fatal("error cached")
	}
}
