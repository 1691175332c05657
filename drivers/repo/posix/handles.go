package posix

import (
	"container/list"
	"os"
	"sync"
	"syscall"
)

// handleCache keeps up to max open read-only files so that many small
// ReadAt calls on the same packs (FUSE reads, restores) cost one pread each
// instead of open+pread+close. Handles are reference counted: an evicted
// handle stays open until its last reader releases it.
type handleCache struct {
	mu     sync.Mutex
	max    int
	lru    *list.List // of *handle, most recently used first
	byPath map[string]*list.Element
	// gen changes on every invalidation; a file opened before an
	// invalidation is not cached, so a reader racing a Delete or an
	// overwriting Put cannot leave a stale handle behind.
	gen    uint64
	closed bool
}

type handle struct {
	path    string
	f       *os.File
	refs    int
	evicted bool
}

func newHandleCache(max int) *handleCache {
	return &handleCache{max: max, lru: list.New(), byPath: map[string]*list.Element{}}
}

// get returns an open handle for path; the caller must release it.
func (c *handleCache) get(path string) (*handle, error) {
	c.mu.Lock()
	if el, ok := c.byPath[path]; ok {
		c.lru.MoveToFront(el)
		h := el.Value.(*handle)
		h.refs++
		c.mu.Unlock()
		return h, nil
	}
	gen := c.gen
	c.mu.Unlock()

	f, err := os.Open(path) // outside the lock: misses must not serialize
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = syscall.EISDIR // a name prefix, not an object
		}
		return nil, err
	}
	h := &handle{path: path, f: f, refs: 1}

	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byPath[path]; ok && !c.closed {
		// Another reader cached it meanwhile: use theirs.
		f.Close()
		c.lru.MoveToFront(el)
		h = el.Value.(*handle)
		h.refs++
		return h, nil
	}
	if c.gen != gen || c.closed {
		h.evicted = true // one-shot handle, closed on release
		return h, nil
	}
	c.byPath[path] = c.lru.PushFront(h)
	for c.lru.Len() > c.max {
		c.evict(c.lru.Back())
	}
	return h, nil
}

func (c *handleCache) release(h *handle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h.refs--
	if h.refs == 0 && h.evicted {
		h.f.Close()
	}
}

// invalidate drops the cached handle of path (deleted or replaced).
func (c *handleCache) invalidate(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if el, ok := c.byPath[path]; ok {
		c.evict(el)
	}
}

// close evicts everything; handles in use close when released.
func (c *handleCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for c.lru.Len() > 0 {
		c.evict(c.lru.Back())
	}
}

// evict must be called with mu held.
func (c *handleCache) evict(el *list.Element) {
	h := el.Value.(*handle)
	c.lru.Remove(el)
	delete(c.byPath, h.path)
	h.evicted = true
	if h.refs == 0 {
		h.f.Close()
	}
}
