package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/chunkstore"
)

// mixedVolume is n chunks of random, text, zero and repeated data.
func mixedVolume(cs, n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	var vol []byte
	for i := range n {
		switch i % 6 {
		case 0, 1:
			vol = append(vol, randomBytes(r, cs)...)
		case 2:
			vol = append(vol, textBytes(r, cs)...)
		case 3:
			vol = append(vol, make([]byte, cs)...)
		case 4:
			vol = append(vol, vol[:cs]...) // chunk 0 again
		case 5:
			vol = append(vol, textBytes(r, cs)...)
		}
	}
	return vol
}

// restoreBytes restores a stored backup into memory.
func restoreBytes(t *testing.T, s *chunkstore.Store, cat Locator, id string, m *chunkstore.Manifest) []byte {
	t.Helper()
	tgt := newMemTarget(m.Size, true)
	if err := Restore(context.Background(), RestoreInput{Store: s, BackupID: id, Manifest: m, Locator: cat, Target: tgt}); err != nil {
		t.Fatal(err)
	}
	return tgt.b
}

// TestBackupRoundTrip: several segments (a short last one), holes that
// are never read, repeated chunks within and across segments; the
// manifest, the references and a restore are all exact.
func TestBackupRoundTrip(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	s.SetPackSize(256 << 10) // many packs
	seg := testSegment
	n := 2*seg + 700
	vol := make([]byte, n*cs-1000)
	copy(vol, mixedVolume(cs, 900, 1))                  // slot 0
	copy(vol[(2*seg+100)*cs:], mixedVolume(cs, 300, 1)) // slot 2 repeats slot 0's chunks
	src := newSource(vol)
	cat := newMapCatalog()
	var progress atomic.Int64
	read := []Range{{0, 900}, {int64(2*seg + 100), int64(n)}} // slot 1 is a hole: never read
	res, err := Backup(context.Background(), BackupInput{Store: s, Catalog: cat, BackupID: "b", Source: src, Size: int64(len(vol)),
		Read: read, Compression: chunkstore.Compression{Level: 1}, Hashers: 3,
		Progress: func(done, total int64) { progress.Store(done) }})
	if err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	if len(m.Segments) != 2 || m.Segments[0].Slot != 0 || m.Segments[1].Slot != 2 {
		t.Fatalf("segments %+v", m.Segments)
	}
	if res.Refs != m.Refs() || cat.counted != res.Refs {
		t.Fatalf("refs %d, manifest %d, counted %d", res.Refs, m.Refs(), cat.counted)
	}
	// Every distinct chunk is stored once; those in both segments count twice.
	if got := restoreBytes(t, s, cat, "b", m); !bytes.Equal(got, vol) {
		t.Fatal("restore differs")
	}
	if progress.Load() != Count(read)*int64(cs)-1000 {
		t.Fatalf("progress ended at %d", progress.Load())
	}
	id0, _ := chunkAt(t, s, "b", m, 0)
	if cat.refs[id0] != 2 {
		t.Fatalf("chunk 0 is in both segments: %d refs, want 2", cat.refs[id0])
	}
	// The head on disk is the one returned, with the digest returned.
	if got, d, err := s.LoadManifest(context.Background(), "b"); err != nil || d != res.Digest || got.Refs() != m.Refs() {
		t.Fatalf("stored head: %v", err)
	}
	// Identical content, identical manifest (another backup id).
	again, err := Backup(context.Background(), BackupInput{Store: s, Catalog: newMapCatalog(), BackupID: "b2", Source: src,
		Size: int64(len(vol)), Read: read, Compression: chunkstore.Compression{Level: 1}})
	if err != nil || again.Digest != res.Digest {
		t.Fatalf("same content, digest %s vs %s: %v", again.Digest, res.Digest, err)
	}
}

// TestBackupCommitOrder: with slow uploads and a slow catalog, references
// are counted only once the packs holding their chunks are committed
// (mapCatalog refuses anything else), segment after segment in list order.
func TestBackupCommitOrder(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	s.SetPackSize(128 << 10)
	be.putDelay.Store(int64(5 * time.Millisecond))
	seg := testSegment
	vol := make([]byte, (3*seg)*cs)
	for slot := range 3 {
		copy(vol[slot*seg*cs:], mixedVolume(cs, 200, uint64(slot+10)))
	}
	cat := newMapCatalog()
	cat.slow = 2 * time.Millisecond
	m := backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: 1})
	var refs []int64
	lastPack := 0
	for i, o := range cat.order {
		if pos, ok := strings.CutPrefix(o, "refs "); ok {
			n, _ := strconv.ParseInt(pos, 10, 64)
			refs = append(refs, n)
		} else {
			lastPack = i
		}
	}
	if len(refs) != 3 || refs[0] != 0 || refs[1] != int64(m.Segments[0].Unique) || refs[2] != refs[1]+int64(m.Segments[1].Unique) {
		t.Fatalf("references counted at %v for segments %+v", refs, m.Segments)
	}
	// The first segment's references came before the last pack was
	// committed: segments do not wait for the whole volume.
	if cat.order[len(cat.order)-1] != "refs "+strconv.FormatInt(refs[2], 10) || lastPack < 2 {
		t.Fatalf("order %v", cat.order)
	}
	first := -1
	for i, o := range cat.order {
		if strings.HasPrefix(o, "refs") {
			first = i
			break
		}
	}
	if first > lastPack {
		t.Fatalf("no reference was counted before the last pack: %v", cat.order)
	}
	if got := restoreBytes(t, s, cat, "b", m); !bytes.Equal(got, vol) {
		t.Fatal("restore differs")
	}
}

// TestBackupSourceError: an I/O error at a chosen offset stops the backup
// with an error naming the offset; references counted before it are the
// counted prefix, and no head is written.
func TestBackupSourceError(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	seg := testSegment
	vol := make([]byte, 2*seg*cs)
	copy(vol, mixedVolume(cs, 300, 3))
	copy(vol[seg*cs:], mixedVolume(cs, 300, 4))
	src := newSource(vol)
	src.failAt = int64(seg+150)*int64(cs) + 77
	cat := newMapCatalog()
	_, err := Backup(context.Background(), BackupInput{Store: s, Catalog: cat, BackupID: "b", Source: src, Size: int64(len(vol)),
		Read: []Range{{0, 300}, {int64(seg), int64(seg + 300)}}})
	if !errors.Is(err, errDisk) {
		t.Fatalf("err = %v, want the source's error", err)
	}
	// The failed block starts at a whole number of blocks into the slot.
	blockOff := int64(seg+128) * int64(cs)
	if !strings.Contains(err.Error(), "byte offset "+strconv.FormatInt(blockOff, 10)) {
		t.Fatalf("error does not name the offset %d: %v", blockOff, err)
	}
	if _, err := be.Stat(context.Background(), chunkstore.ManifestName("b")); err == nil {
		t.Fatal("a failed backup wrote its manifest head")
	}
	// The first segment may have been counted (a prefix), the second not.
	if cat.counted != 0 && cat.counted > int64(300) {
		t.Fatalf("%d references counted past the first segment", cat.counted)
	}
}

// TestBackupCancel: cancelling mid-stream stops every stage promptly,
// returns the cancellation, and stops reading the source.
func TestBackupCancel(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	vol := mixedVolume(cs, 2000, 5)
	src := newSource(vol)
	src.delay = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	var reached atomic.Bool
	go func() {
		for src.reads.Load() < 20 {
			time.Sleep(time.Millisecond)
		}
		reached.Store(true)
		cancel()
	}()
	start := time.Now()
	_, err := Backup(ctx, BackupInput{Store: s, Catalog: newMapCatalog(), BackupID: "b", Source: src, Size: int64(len(vol)),
		Read: []Range{{0, 2000}}})
	if !errors.Is(err, context.Canceled) || !reached.Load() {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	n := src.reads.Load()
	time.Sleep(50 * time.Millisecond)
	if src.reads.Load() != n || n >= 2000/64 {
		t.Fatalf("%d reads of %d blocks; still reading after cancel: %v", n, 2000/64, src.reads.Load() != n)
	}
}

// TestBackupSlowRepository: uploads far slower than hashing hold the
// pipeline back (bounded buffers) and the result is still exact.
func TestBackupSlowRepository(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	s.SetPackSize(64 << 10)
	be.putDelay.Store(int64(20 * time.Millisecond))
	vol := mixedVolume(cs, 600, 6)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: 1})
	if len(cat.packs) < 20 {
		t.Fatalf("only %d packs", len(cat.packs))
	}
	if got := restoreBytes(t, s, cat, "b", m); !bytes.Equal(got, vol) {
		t.Fatal("restore differs")
	}
}

// TestBackupIncrementalFromParent: only the changed chunks are read; the
// rest keep the parent's IDs, a discarded range becomes zeros without a
// read, and the volume grew.
func TestBackupIncrementalFromParent(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	seg := testSegment
	vol := make([]byte, (seg+500)*cs-3000)
	copy(vol, mixedVolume(cs, 400, 7))
	copy(vol[seg*cs:], mixedVolume(cs, 400, 8))
	cat := newMapCatalog()
	pm := backupBytes(t, s, cat, "parent", vol, chunkstore.Compression{Level: 1})

	next := append(bytes.Clone(vol), make([]byte, 5000)...) // grew: the old short chunk changes length
	r := rand.New(rand.NewPCG(9, 9))
	copy(next[10*cs:], randomBytes(r, 2*cs))                        // changed chunks 10, 11
	clear(next[(seg+20)*cs : (seg+30)*cs])                          // discarded
	read := []Range{{10, 12}, {int64(seg + 499), int64(seg + 501)}} // changes, the old tail and the growth
	src := newSource(next)
	cat.counted = 0
	res, err := Backup(context.Background(), BackupInput{Store: s, Catalog: cat, BackupID: "child", Source: src, Size: int64(len(next)),
		Read: read, Zero: []Range{{int64(seg + 20), int64(seg + 30)}}, Parent: &Parent{BackupID: "parent", Manifest: pm}})
	if err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, s, cat, "child", res.Manifest); !bytes.Equal(got, next) {
		t.Fatal("incremental restores differently")
	}
	if n := src.reads.Load(); n != 2 {
		t.Fatalf("%d reads of the source, want 2 runs", n)
	}
}

// lookupCatalog records the chunks a backup looks up.
type lookupCatalog struct {
	*mapCatalog
	mu     sync.Mutex
	looked map[chunkstore.ID]int
}

func (c *lookupCatalog) Stored(ctx context.Context, id chunkstore.ID) (bool, error) {
	c.mu.Lock()
	c.looked[id]++
	c.mu.Unlock()
	return c.mapCatalog.Stored(ctx, id)
}

// TestBackupKnownSkipsLookups: an incremental that reads everything again
// with its parent as Known looks up only the chunks whose ID differs from
// the parent's at the same index (here two changed ones, and one moved
// to where the parent had other data), and stores and counts exactly
// what a backup without Known does.
func TestBackupKnownSkipsLookups(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	seg := testSegment
	vol := make([]byte, (seg+500)*cs)
	copy(vol, mixedVolume(cs, 400, 7))
	copy(vol[seg*cs:], mixedVolume(cs, 400, 8))
	base := newMapCatalog()
	pm := backupBytes(t, s, base, "parent", vol, chunkstore.Compression{Level: 1})

	next := bytes.Clone(vol)
	r := rand.New(rand.NewPCG(9, 9))
	copy(next[10*cs:], randomBytes(r, 2*cs))               // chunks 10, 11 changed
	copy(next[(seg+450)*cs:(seg+451)*cs], next[7*cs:8*cs]) // chunk 7's data where the parent had zeros
	all := []Range{{0, int64(len(next) / cs)}}
	run := func(id string, known *Parent) (BackupResult, *lookupCatalog) {
		cat := &lookupCatalog{mapCatalog: newMapCatalog(), looked: map[chunkstore.ID]int{}}
		for c, loc := range base.locs {
			cat.locs[c] = loc
		}
		res, err := Backup(context.Background(), BackupInput{Store: s, Catalog: cat, BackupID: id, Source: newSource(next),
			Size: int64(len(next)), Read: all, Known: known})
		if err != nil {
			t.Fatal(err)
		}
		if got := restoreBytes(t, s, cat, id, res.Manifest); !bytes.Equal(got, next) {
			t.Fatalf("backup %s restores differently", id)
		}
		return res, cat
	}
	plain, plainCat := run("plain", nil)
	res, cat := run("known", &Parent{BackupID: "parent", Manifest: pm})
	want := map[chunkstore.ID]int{}
	for _, i := range []int64{10, 11, int64(seg + 450)} {
		want[s.ChunkID(next[i*int64(cs):(i+1)*int64(cs)])] = 1
	}
	if !maps.Equal(cat.looked, want) {
		t.Errorf("looked up %d chunks (%v), want only the 3 that differ from the parent at their index", len(cat.looked), cat.looked)
	}
	if len(plainCat.looked) <= len(want) {
		t.Errorf("without Known %d lookups: the test shows nothing", len(plainCat.looked))
	}
	if res.Stored != plain.Stored || res.Refs != plain.Refs || !maps.Equal(cat.refs, plainCat.refs) {
		t.Errorf("with Known: stored %d bytes, %d references %v; without: %d, %d %v", res.Stored, res.Refs, cat.refs, plain.Stored, plain.Refs, plainCat.refs)
	}
}

// TestBudgetSurvivesFailures: backups that fail or are cancelled give
// every read block, pack buffer and CPU token back to the shared budget,
// and backups running together on one budget all complete exactly.
func TestBudgetSurvivesFailures(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	budget := NewBudget(1)
	vol := mixedVolume(cs, 400, 31)
	for i := range 3 {
		src := newSource(vol)
		src.failAt = int64(100+i*50) * int64(cs)
		_, err := Backup(context.Background(), BackupInput{Store: s, Catalog: newMapCatalog(), BackupID: "bad", Source: src,
			Size: int64(len(vol)), Read: []Range{{0, 400}}, Budget: budget})
		if !errors.Is(err, errDisk) {
			t.Fatalf("failing backup %d: %v", i, err)
		}
	}
	if n := len(budget.blocks) + budget.packs.InUse() + len(budget.tokens); n != 0 {
		t.Fatalf("%d budget tokens still held after the failures", n)
	}
	if n := len(budget.free) + budget.packs.Kept(); n != 0 {
		t.Fatalf("%d buffers kept by a budget no backup uses", n)
	}
	// Four at once on the same budget.
	vols := make([][]byte, 4)
	errs := make(chan error, 4)
	cats := make([]*mapCatalog, 4)
	ms := make([]*chunkstore.Manifest, 4)
	for i := range vols {
		vols[i] = mixedVolume(cs, 300, uint64(40+i))
		cats[i] = newMapCatalog()
		go func() {
			res, err := Backup(context.Background(), BackupInput{Store: s, Catalog: cats[i], BackupID: "c" + strconv.Itoa(i),
				Source: newSource(vols[i]), Size: int64(len(vols[i])), Read: []Range{{0, 300}}, Budget: budget})
			ms[i] = res.Manifest
			errs <- err
		}()
	}
	for range vols {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("backups sharing a budget did not complete")
		}
	}
	for i := range vols {
		if got := restoreBytes(t, s, cats[i], "c"+strconv.Itoa(i), ms[i]); !bytes.Equal(got, vols[i]) {
			t.Fatalf("backup %d restores differently", i)
		}
	}
	if n := len(budget.blocks) + budget.packs.InUse() + len(budget.tokens) + len(budget.free) + budget.packs.Kept(); n != 0 {
		t.Fatalf("%d budget tokens or buffers still held after the four backups", n)
	}
}

// TestBackupCountsAgainstBase: with Base, an incremental (change-tracked
// from Parent, or read whole with Known) counts exactly the list
// chunkstore.WalkRelRefs walks — each segment's IDs not in the base's
// segment of its slot, in positions from 0 — and a walk from a position
// gives that list's suffix.
func TestBackupCountsAgainstBase(t *testing.T) {
	cs := 16 << 10
	s, _ := newTestStore(t, cs)
	seg := testSegment
	vol := make([]byte, (seg+500)*cs-3000)
	copy(vol, mixedVolume(cs, 400, 7))
	copy(vol[seg*cs:], mixedVolume(cs, 400, 8))
	base := newMapCatalog()
	pm := backupBytes(t, s, base, "parent", vol, chunkstore.Compression{Level: 1})
	parent := &Parent{BackupID: "parent", Manifest: pm}

	next := append(bytes.Clone(vol), make([]byte, 2*seg*cs)...) // grew by slots the parent has none of
	r := rand.New(rand.NewPCG(9, 9))
	copy(next[10*cs:], randomBytes(r, 2*cs))
	copy(next[(2*seg+3)*cs:], randomBytes(r, 3*cs))
	copy(next[(seg+5)*cs:(seg+6)*cs], next[7*cs:8*cs]) // a chunk of slot 0 also in slot 1
	for _, tc := range []struct {
		name string
		in   BackupInput
	}{
		{"tracked", BackupInput{Read: []Range{{10, 12}, {int64(seg + 5), int64(seg + 6)}, {int64(seg + 499), int64(3*seg + 500)}}, Parent: parent}},
		{"known", BackupInput{Read: []Range{{0, int64(len(next) / cs)}}, Known: parent}},
	} {
		cat := newMapCatalog()
		maps.Copy(cat.locs, base.locs)
		in := tc.in
		in.Store, in.Catalog, in.BackupID, in.Source, in.Size, in.Base = s, cat, "child-"+tc.name, newSource(next), int64(len(next)), parent
		res, err := Backup(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if got := restoreBytes(t, s, cat, in.BackupID, res.Manifest); !bytes.Equal(got, next) {
			t.Fatalf("%s: restores differently", tc.name)
		}
		var list []chunkstore.ID
		err = s.WalkRelRefs(context.Background(), in.BackupID, res.Manifest, "parent", pm, 0, func(pos int64, ids []chunkstore.ID) error {
			if pos != int64(len(list)) {
				return fmt.Errorf("walk at %d, want %d", pos, len(list))
			}
			list = append(list, ids...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := map[chunkstore.ID]int{}
		for _, id := range list {
			want[id]++
		}
		if res.Counted != int64(len(list)) || cat.counted != res.Counted || !maps.Equal(cat.refs, want) {
			t.Fatalf("%s: counted %d (%d), the relative list has %d", tc.name, res.Counted, cat.counted, len(list))
		}
		if res.Counted == 0 || res.Counted >= res.Refs/4 {
			t.Fatalf("%s: counted %d of %d: the test shows nothing", tc.name, res.Counted, res.Refs)
		}
		for _, from := range []int64{1, res.Counted - 1} {
			var tail []chunkstore.ID
			err := s.WalkRelRefs(context.Background(), in.BackupID, res.Manifest, "parent", pm, from, func(_ int64, ids []chunkstore.ID) error {
				tail = append(tail, ids...)
				return nil
			})
			if err != nil || fmt.Sprint(tail) != fmt.Sprint(list[from:]) {
				t.Fatalf("%s: walk from %d: %d IDs (%v), want %d", tc.name, from, len(tail), err, len(list[from:]))
			}
		}
	}
}
