package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/repo/mem"
)

// Sum is chunkstore.Sum, short for the tests.
var Sum = chunkstore.Sum

func randomBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var words = []string{"volume", "backup", "chunk", "the", "of", "pack", "manifest", "record",
	"zstd", "block", "device", "snapshot", "cinder", "restore", "mount", "and", "a", "to", "\n"}

// textBytes is log-like text that compresses a few times.
func textBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		if r.IntN(4) == 0 {
			b = fmt.Appendf(b, "%d", r.IntN(100000))
		}
		b = append(b, ' ')
	}
	return b[:n]
}

// testRepo is an in-memory repository (the mem driver) that counts reads
// per object and offset, can corrupt bytes, and can be slowed down.
type testRepo struct {
	repo.Backend
	reads     atomic.Int64
	putDelay  atomic.Int64 // nanoseconds per Put
	readDelay atomic.Int64 // nanoseconds per ReadAt
	mu        sync.Mutex
	perLoc    map[string]int
	// onPut, when set, is told of each object before it is written and
	// may refuse it (the tests' ordering checks).
	onPut func(name string, data []byte) error
	// puts counts the Puts in flight, peak the most at once.
	puts, peak atomic.Int64
}

var repoSeq atomic.Int64

// testSegment is the segment size of the tests' manifests: small, so a few
// MiB of volume spans several segments.
const testSegment = 1024

func newTestStore(t testing.TB, chunkSize int) (*chunkstore.Store, *testRepo) {
	t.Helper()
	name := fmt.Sprintf("pipeline-%d", repoSeq.Add(1))
	be, err := mem.OpenURL(&url.URL{Scheme: "mem", Host: name}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Remove(name) })
	tr := &testRepo{Backend: be, perLoc: map[string]int{}}
	s, err := chunkstore.Init(context.Background(), tr, chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetSegmentChunks(testSegment); err != nil {
		t.Fatal(err)
	}
	return s, tr
}

func (r *testRepo) Put(ctx context.Context, name string, data []byte) error {
	if r.onPut != nil {
		if err := r.onPut(name, data); err != nil {
			return err
		}
	}
	n := r.puts.Add(1)
	defer r.puts.Add(-1)
	for p := r.peak.Load(); n > p && !r.peak.CompareAndSwap(p, n); p = r.peak.Load() {
	}
	if d := r.putDelay.Load(); d > 0 {
		select {
		case <-time.After(time.Duration(d)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return r.Backend.Put(ctx, name, data)
}

func (r *testRepo) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if d := r.readDelay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	r.reads.Add(1)
	r.mu.Lock()
	r.perLoc[fmt.Sprintf("%s@%d", name, off)]++
	r.mu.Unlock()
	return r.Backend.ReadAt(ctx, name, p, off)
}

// readCount is how often the blob at loc was read.
func (r *testRepo) readCount(loc chunkstore.Location) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.perLoc[fmt.Sprintf("packs/%s@%d", loc.Pack, loc.Offset)]
}

// corrupt flips one byte of an object.
func (r *testRepo) corrupt(t testing.TB, name string, off int) {
	t.Helper()
	data, err := r.Backend.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.Clone(data)
	data[off] ^= 0xff
	if err := r.Backend.Put(context.Background(), name, data); err != nil {
		t.Fatal(err)
	}
}

func packName(id chunkstore.ID) string { return "packs/" + id.String() }

var errNotInCatalog = errors.New("not in catalog")

// mapCatalog is a Catalog and Locator over maps, checking the orderings a
// backup promises: a reference is counted only to a chunk whose pack is
// committed (or that was stored before), positions in list order.
type mapCatalog struct {
	mu      sync.Mutex
	locs    map[chunkstore.ID]chunkstore.Location
	refs    map[chunkstore.ID]int
	counted int64 // next position of the reference list
	packs   []chunkstore.ID
	order   []string // "pack <id>" and "refs <pos>", as they happened
	errAt   int64    // CountRefs fails once the list reaches this position (0: never)
	slow    time.Duration
	// onCommit, when set, may refuse a pack's commit (ordering checks).
	onCommit func(pack chunkstore.ID) error
}

func newMapCatalog() *mapCatalog {
	return &mapCatalog{locs: map[chunkstore.ID]chunkstore.Location{}, refs: map[chunkstore.ID]int{}}
}

func (c *mapCatalog) Stored(_ context.Context, id chunkstore.ID) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.locs[id]
	return ok, nil
}

func (c *mapCatalog) CommitPack(_ context.Context, pack chunkstore.ID, entries []chunkstore.PackEntry) error {
	if c.slow > 0 {
		time.Sleep(c.slow)
	}
	if c.onCommit != nil {
		if err := c.onCommit(pack); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range entries {
		if _, ok := c.locs[e.ID]; !ok {
			c.locs[e.ID] = e.Location
		}
	}
	c.packs = append(c.packs, pack)
	c.order = append(c.order, "pack "+pack.String())
	return nil
}

func (c *mapCatalog) CountRefs(_ context.Context, pos int64, ids []chunkstore.ID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pos != c.counted {
		return fmt.Errorf("references counted at %d, expected %d", pos, c.counted)
	}
	if c.errAt > 0 && pos+int64(len(ids)) >= c.errAt {
		return errors.New("catalog: injected failure")
	}
	for _, id := range ids {
		if _, ok := c.locs[id]; !ok {
			return fmt.Errorf("reference to chunk %s counted before its pack was committed", id)
		}
		c.refs[id]++
	}
	c.counted += int64(len(ids))
	c.order = append(c.order, fmt.Sprintf("refs %d", pos))
	return nil
}

func (c *mapCatalog) Locate(_ context.Context, id chunkstore.ID) (chunkstore.Location, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	loc, ok := c.locs[id]
	if !ok {
		return loc, fmt.Errorf("chunk %s: %w", id, errNotInCatalog)
	}
	return loc, nil
}

// byteSource is a volume in memory; failAt makes reads covering that
// offset fail.
type byteSource struct {
	b      []byte
	failAt int64 // -1: never
	delay  time.Duration
	reads  atomic.Int64
}

func newSource(b []byte) *byteSource { return &byteSource{b: b, failAt: -1} }

var errDisk = errors.New("input/output error")

func (s *byteSource) ReadAt(p []byte, off int64) (int, error) {
	s.reads.Add(1)
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	if s.failAt >= 0 && off <= s.failAt && s.failAt < off+int64(len(p)) {
		return 0, errDisk
	}
	if off >= int64(len(s.b)) {
		return 0, errors.New("read past the end")
	}
	n := copy(p, s.b[off:])
	if n < len(p) {
		return n, errors.New("short read")
	}
	return n, nil
}

// backupBytes backs up vol (every chunk read) and returns the manifest.
func backupBytes(t testing.TB, s *chunkstore.Store, cat *mapCatalog, id string, vol []byte, comp chunkstore.Compression) *chunkstore.Manifest {
	t.Helper()
	cs := s.Config().ChunkSize
	res, err := Backup(context.Background(), BackupInput{Store: s, Catalog: cat, BackupID: id, Source: newSource(vol),
		Size: int64(len(vol)), Read: []Range{{0, (int64(len(vol)) + int64(cs) - 1) / int64(cs)}}, Compression: comp})
	if err != nil {
		t.Fatal(err)
	}
	return res.Manifest
}

// chunkAt is chunk i of a stored manifest.
func chunkAt(t testing.TB, s *chunkstore.Store, backup string, m *chunkstore.Manifest, i int64) (chunkstore.ID, bool) {
	t.Helper()
	k, ok := m.Find(int(i / int64(m.SegmentChunks)))
	if !ok {
		return chunkstore.ID{}, false
	}
	g, err := s.LoadSegment(context.Background(), backup, m, k)
	if err != nil {
		t.Fatal(err)
	}
	return g.Chunk(i)
}

func sleep() { time.Sleep(10 * time.Millisecond) }
