package pipeline

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"

	"github.com/volback/volback/chunkstore"
)

// ID is a chunk ID.
type ID = chunkstore.ID

// Cache is a bounded LRU of decoded chunks shared by all images of a store.
// It is sharded by ID so concurrent readers rarely meet on a lock, no I/O
// happens under a lock, and concurrent misses on one chunk fetch it once.
//
// Chunk buffers are reference counted and recycled: a reader holds a chunk
// only while it copies from it, eviction drops the chunk from the LRU at
// once, and its buffer is reused when the last holder lets go. A steady
// stream of reads therefore allocates nothing (no garbage for the GC to
// chase), and memory stays at the cache size plus the chunks being read.
type Cache struct {
	shards []cacheShard

	// hits and misses count lookups (a read joining a fetch in flight is
	// a hit), for metrics.
	hits, misses atomic.Uint64

	freeMu sync.Mutex
	free   map[int][]*[]byte // free buffers by size
}

type cacheShard struct {
	mu    sync.Mutex
	max   int64
	used  int64
	items map[ID]*cacheEntry // loading and loaded chunks
	lru   list.List          // of *cacheEntry; front = most recently used
}

// cacheEntry is one chunk, loading or loaded. Fields other than data and
// err are guarded by the shard's lock; data and err are set once, before
// done is closed.
type cacheEntry struct {
	id   ID
	buf  *[]byte // whole recycled buffer; data lies within it
	data []byte
	err  error
	done chan struct{}
	refs int32
	elem *list.Element // in the LRU while cached
	gone bool          // out of the map: the last release recycles buf
}

// NewCache makes a cache holding up to maxBytes of chunk buffers. Shards
// are only used when each can still hold many large chunks.
func NewCache(maxBytes int64) *Cache {
	maxBytes = max(maxBytes, 0)
	n := 1
	for n < 16 && maxBytes/int64(2*n) >= 32<<20 {
		n *= 2
	}
	c := &Cache{shards: make([]cacheShard, n), free: map[int][]*[]byte{}}
	for i := range c.shards {
		c.shards[i].max = maxBytes / int64(n)
		c.shards[i].items = map[ID]*cacheEntry{}
	}
	return c
}

func (c *Cache) shard(id ID) *cacheShard {
	return &c.shards[int(id[0])&(len(c.shards)-1)]
}

// Stats returns how many lookups found their chunk cached (or being
// fetched) and how many had to fetch it.
func (c *Cache) Stats() (hits, misses uint64) { return c.hits.Load(), c.misses.Load() }

// Contains reports whether id is cached (or being fetched), without
// touching its recency.
func (c *Cache) Contains(id ID) bool {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.items[id]
	return ok
}

// filler fetches a missing chunk into buf and returns its bytes within buf.
// (An interface rather than a func, so callers need no closure per read.)
type filler interface {
	fill(id ID, buf []byte) ([]byte, error)
}

// acquire returns id's entry with a reference held; the caller reads
// e.data and must release(e). On a miss, f.fill decodes the chunk into a
// buffer of bufSize bytes and returns the chunk's bytes within it; however
// many callers miss at once, f runs once. Errors are not cached.
func (c *Cache) acquire(ctx context.Context, id ID, bufSize int, f filler) (*cacheEntry, error) {
	sh := c.shard(id)
	sh.mu.Lock()
	if e, ok := sh.items[id]; ok {
		c.hits.Add(1)
		e.refs++
		if e.elem != nil {
			sh.lru.MoveToFront(e.elem)
			sh.mu.Unlock()
			return e, nil
		}
		sh.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			c.release(e)
			return nil, ctx.Err()
		}
		if e.err != nil {
			err := e.err
			c.release(e)
			return nil, err
		}
		return e, nil
	}
	c.misses.Add(1)
	e := &cacheEntry{id: id, done: make(chan struct{}), refs: 1}
	sh.items[id] = e
	sh.mu.Unlock()

	e.buf = c.getBuf(bufSize)
	e.data, e.err = f.fill(id, *e.buf)

	sh.mu.Lock()
	size := int64(cap(*e.buf))
	if e.err != nil || size > sh.max {
		// Not kept: later readers fetch again.
		delete(sh.items, id)
		e.gone = true
	} else {
		e.elem = sh.lru.PushFront(e)
		sh.used += size
		for sh.used > sh.max {
			sh.evictLocked(c, sh.lru.Back().Value.(*cacheEntry))
		}
	}
	sh.mu.Unlock()
	close(e.done)
	if e.err != nil {
		err := e.err
		c.release(e)
		return nil, err
	}
	return e, nil
}

// release drops a reference taken by acquire.
func (c *Cache) release(e *cacheEntry) {
	sh := c.shard(e.id)
	sh.mu.Lock()
	e.refs--
	recycle := e.refs == 0 && e.gone
	sh.mu.Unlock()
	if recycle {
		c.putBuf(e)
	}
}

func (sh *cacheShard) evictLocked(c *Cache, e *cacheEntry) {
	sh.lru.Remove(e.elem)
	e.elem = nil
	delete(sh.items, e.id)
	sh.used -= int64(cap(*e.buf))
	e.gone = true
	if e.refs == 0 {
		c.putBuf(e)
	}
}

// maxFree bounds the free buffers kept per size. In steady state each
// miss evicts one chunk and reuses its buffer, so few are ever free.
const maxFree = 32

// getBuf returns a buffer of exactly size bytes, recycled when one is free.
func (c *Cache) getBuf(size int) *[]byte {
	c.freeMu.Lock()
	l := c.free[size]
	if n := len(l); n > 0 {
		b := l[n-1]
		c.free[size] = l[:n-1]
		c.freeMu.Unlock()
		return b
	}
	c.freeMu.Unlock()
	b := make([]byte, size)
	return &b
}

func (c *Cache) putBuf(e *cacheEntry) {
	b := e.buf
	e.buf, e.data = nil, nil
	c.freeMu.Lock()
	defer c.freeMu.Unlock()
	if l := c.free[cap(*b)]; len(l) < maxFree {
		c.free[cap(*b)] = append(l, b)
	}
}
