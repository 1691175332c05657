package chunkstore

import (
	"container/list"
	"context"
	"sync"
)

// Cache is a bounded LRU of decoded chunks shared by all images of a store.
// It is sharded by ID so concurrent readers rarely meet on a lock, no I/O
// happens under a lock, and concurrent misses on one chunk fetch it once.
// Cached slices are shared and must not be modified.
type Cache struct {
	shards []cacheShard
}

type cacheShard struct {
	mu    sync.Mutex
	max   int64
	used  int64
	items map[ID]*list.Element // values are *cacheItem
	lru   list.List            // front = most recently used
	calls map[ID]*cacheCall
}

type cacheItem struct {
	id   ID
	data []byte
}

// cacheCall is one fetch in flight; later readers of the same chunk wait
// for it instead of fetching again.
type cacheCall struct {
	done chan struct{}
	data []byte
	err  error
}

// NewCache makes a cache holding up to maxBytes of decoded chunks. Shards
// are only used when each can still hold many large chunks.
func NewCache(maxBytes int64) *Cache {
	maxBytes = max(maxBytes, 0)
	n := 1
	for n < 16 && maxBytes/int64(2*n) >= 32<<20 {
		n *= 2
	}
	c := &Cache{shards: make([]cacheShard, n)}
	for i := range c.shards {
		c.shards[i].max = maxBytes / int64(n)
		c.shards[i].items = map[ID]*list.Element{}
		c.shards[i].calls = map[ID]*cacheCall{}
	}
	return c
}

func (c *Cache) shard(id ID) *cacheShard {
	return &c.shards[int(id[0])&(len(c.shards)-1)]
}

// Contains reports whether id is cached, without touching its recency.
func (c *Cache) Contains(id ID) bool {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.items[id]
	return ok
}

// get returns the cached chunk or fetches it once, however many callers
// ask at the same time.
func (c *Cache) get(ctx context.Context, id ID, fetch func() ([]byte, error)) ([]byte, error) {
	sh := c.shard(id)
	sh.mu.Lock()
	if e, ok := sh.items[id]; ok {
		sh.lru.MoveToFront(e)
		data := e.Value.(*cacheItem).data
		sh.mu.Unlock()
		return data, nil
	}
	if call, ok := sh.calls[id]; ok {
		sh.mu.Unlock()
		select {
		case <-call.done:
			return call.data, call.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	call := &cacheCall{done: make(chan struct{})}
	sh.calls[id] = call
	sh.mu.Unlock()

	call.data, call.err = fetch()

	sh.mu.Lock()
	delete(sh.calls, id)
	if call.err == nil {
		sh.addLocked(id, call.data)
	}
	sh.mu.Unlock()
	close(call.done)
	return call.data, call.err
}

func (sh *cacheShard) addLocked(id ID, data []byte) {
	size := int64(cap(data))
	if size > sh.max {
		return
	}
	if _, ok := sh.items[id]; ok {
		return
	}
	sh.items[id] = sh.lru.PushFront(&cacheItem{id: id, data: data})
	sh.used += size
	for sh.used > sh.max {
		e := sh.lru.Back()
		it := e.Value.(*cacheItem)
		sh.lru.Remove(e)
		delete(sh.items, it.id)
		sh.used -= int64(cap(it.data))
	}
}
