package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
)

// testVolume is 40 chunks and a short tail: random, text, zero and
// repeated chunks.
func testVolume(cs int) []byte {
	r := rand.New(rand.NewPCG(11, 12))
	var vol []byte
	for i := range 40 {
		switch i % 5 {
		case 0:
			vol = append(vol, randomBytes(r, cs)...)
		case 1, 2:
			vol = append(vol, textBytes(r, cs)...)
		case 3:
			vol = append(vol, make([]byte, cs)...)
		case 4:
			vol = append(vol, vol[:cs]...) // same as chunk 0
		}
	}
	return append(vol, textBytes(r, 1234)...)
}

func TestImageReads(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	vol := testVolume(cs)
	cat := newMapCatalog()
	backupBytes(t, s, cat, "b1", vol, chunkstore.Compression{Level: 3})
	// Go through the stored manifest, as restore and mount do.
	m, _, err := s.LoadManifest(context.Background(), "b1")
	if err != nil {
		t.Fatal(err)
	}
	im := OpenImage(s, "b1", m, cat, ImageOptions{ReadAhead: 4})
	defer im.Close()
	if im.Size() != int64(len(vol)) {
		t.Fatalf("size %d", im.Size())
	}
	// Whole image.
	all := make([]byte, len(vol))
	if n, err := im.ReadAt(all, 0); n != len(vol) || err != nil || !bytes.Equal(all, vol) {
		t.Fatalf("full read: %d %v equal %v", n, err, bytes.Equal(all, vol))
	}
	// Random ranges, including ones crossing chunks and the end.
	r := rand.New(rand.NewPCG(13, 14))
	for range 500 {
		off := r.Int64N(int64(len(vol)))
		n := r.IntN(3 * cs)
		p := make([]byte, n)
		got, err := im.ReadAt(p, off)
		want := min(n, len(vol)-int(off))
		if got != want || !bytes.Equal(p[:got], vol[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", n, off, got, err)
		}
		if (got < n) != (err == io.EOF) {
			t.Fatalf("ReadAt(%d, %d): n %d err %v", n, off, got, err)
		}
	}
	if n, err := im.ReadAt(make([]byte, 10), int64(len(vol))); n != 0 || err != io.EOF {
		t.Fatalf("read at end: %d %v", n, err)
	}
	if _, err := im.ReadAt(make([]byte, 10), -1); err == nil {
		t.Fatal("negative offset accepted")
	}
	// Zero chunks cost no reads: read a zero chunk with an empty cache.
	im2 := OpenImage(s, "b1", m, cat, ImageOptions{})
	im2.ReadAt(make([]byte, 1), 0) // the segment is loaded
	before := be.reads.Load()
	p := make([]byte, cs)
	if _, err := im2.ReadAt(p, 3*int64(cs)); err != nil || !chunkstore.IsZero(p) || be.reads.Load() != before {
		t.Fatalf("zero chunk: %v, %d reads", err, be.reads.Load()-before)
	}
	im2.Close()
	if _, err := im2.ReadAt(p, 0); err == nil {
		t.Fatal("read after Close succeeded")
	}
}

func TestImageConcurrentReaders(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	vol := testVolume(cs)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b2", vol, chunkstore.Compression{Level: 1})
	im := OpenImage(s, "b2", m, cat, ImageOptions{Cache: NewCache(64 << 20), ReadAhead: 8})
	defer im.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for range 200 {
				off := r.Int64N(int64(len(vol)))
				p := make([]byte, r.IntN(2*cs)+1)
				n, _ := im.ReadAt(p, off)
				if !bytes.Equal(p[:n], vol[off:off+int64(n)]) {
					t.Errorf("reader %d: wrong bytes at %d", w, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Every stored chunk was fetched at most once (singleflight + cache big
	// enough to hold the image): reads <= unique non-zero chunks.
	if n := be.reads.Load(); n > int64(len(cat.locs)) {
		t.Fatalf("%d backend reads for %d unique chunks", n, len(cat.locs))
	}
}

func TestImageSequentialReadAhead(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	vol := testVolume(cs)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b3", vol, chunkstore.Compression{Level: 1})
	cache := NewCache(64 << 20)
	im := OpenImage(s, "b3", m, cat, ImageOptions{Cache: cache, ReadAhead: 8})
	defer im.Close()
	cached := func(from, to int64, want bool) {
		t.Helper()
		for i := from; i <= to; i++ {
			id, ok := chunkAt(t, s, "b3", m, i)
			if !ok {
				continue
			}
			if want {
				waitFor(t, func() bool { return cache.Contains(id) }, fmt.Sprintf("read-ahead of chunk %d", i))
			} else if cache.Contains(id) {
				t.Fatalf("chunk %d was read ahead, past the window", i)
			}
		}
	}
	// The first chunk: a run of one chunk fetches two ahead, no more
	// (queueing is done when ReadAt returns, so "no more" is exact).
	p := make([]byte, cs)
	if _, err := im.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	cached(1, 2, true)
	cached(5, 7, false) // 3 is zeros, 4 the same as 0
	// Chunks 1..3 one by one: the window doubles with the run up to
	// ReadAhead, 8 chunks past the last read: 4..11, and not 12.
	for i := int64(1); i <= 3; i++ {
		if _, err := im.ReadAt(p, i*int64(cs)); err != nil {
			t.Fatal(err)
		}
	}
	cached(4, 11, true)
	cached(12, 12, false)
	// A jump starts a new run: chunk 25 fetches nothing ahead, 26 then
	// 27..30 and not 31 or 32.
	for _, i := range []int64{25, 26} {
		if _, err := im.ReadAt(p, i*int64(cs)); err != nil {
			t.Fatal(err)
		}
	}
	cached(27, 30, true)
	cached(31, 32, false)
	buf := make([]byte, 8*cs)
	if _, err := im.ReadAt(buf, int64(cs)); err != nil || !bytes.Equal(buf, vol[cs:9*cs]) {
		t.Fatal(err)
	}
	for i := range int64(9) {
		if id, ok := chunkAt(t, s, "b3", m, i); ok {
			loc, _ := cat.Locate(context.Background(), id)
			if n := be.readCount(loc); n != 1 {
				t.Fatalf("chunk %d read %d times", i, n)
			}
		}
	}
	// A full sequential pass returns the right bytes.
	var out bytes.Buffer
	if _, err := io.Copy(&out, io.NewSectionReader(im, 0, im.Size())); err != nil || !bytes.Equal(out.Bytes(), vol) {
		t.Fatalf("sequential copy: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		sleep()
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestImageCorruption(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	vol := testVolume(cs)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "backup-1234", vol, chunkstore.Compression{Level: 3})
	// Corrupt the blob of chunk 1 (text, stored once).
	id1, _ := chunkAt(t, s, "backup-1234", m, 1)
	loc, _ := cat.Locate(context.Background(), id1)
	be.corrupt(t, packName(loc.Pack), int(loc.Offset+loc.Length/2))
	im := OpenImage(s, "backup-1234", m, cat, ImageOptions{ReadAhead: 4})
	defer im.Close()
	p := make([]byte, 100)
	n, err := im.ReadAt(p, int64(cs)+500)
	if n != 0 || !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("corrupt chunk: n %d err %v", n, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "backup backup-1234: chunk at offset 16384") || !strings.Contains(msg, id1.String()) {
		t.Fatalf("error does not name backup, offset and chunk: %s", msg)
	}
	// A read spanning into the bad chunk returns the good prefix.
	p = make([]byte, 2*cs)
	n, err = im.ReadAt(p, 0)
	if n != cs || !errors.Is(err, chunkstore.ErrCorrupt) || !bytes.Equal(p[:n], vol[:cs]) {
		t.Fatalf("spanning read: n %d err %v", n, err)
	}
	// Other ranges are fine.
	p = make([]byte, 5*cs)
	if _, err := im.ReadAt(p, 2*int64(cs)); err != nil || !bytes.Equal(p, vol[2*cs:7*cs]) {
		t.Fatalf("good range: %v", err)
	}
	// A missing pack: ErrNotFound, named.
	id2, _ := chunkAt(t, s, "backup-1234", m, 2)
	loc2, _ := cat.Locate(context.Background(), id2)
	be.Delete(context.Background(), packName(loc2.Pack))
	im2 := OpenImage(s, "backup-1234", m, cat, ImageOptions{Name: "b9"})
	defer im2.Close()
	if _, err := im2.ReadAt(p[:10], 2*int64(cs)); !errors.Is(err, repo.ErrNotFound) || !strings.Contains(err.Error(), "backup b9: chunk at offset 32768") {
		t.Fatalf("missing pack: %v", err)
	}
	// A chunk the locator does not know.
	im3 := OpenImage(s, "backup-1234", m, newMapCatalog(), ImageOptions{Name: "b10"})
	defer im3.Close()
	if _, err := im3.ReadAt(p[:10], 0); !errors.Is(err, errNotInCatalog) {
		t.Fatalf("unknown chunk: %v", err)
	}
}

// TestImageReadSlices: ReadSlices gives ReadAt's bytes without copying,
// holds the cached chunks until release, verifies a chunk when it enters
// the cache (a corrupt blob fails the first read) and not again on a hit
// (the blob, corrupted after the first read, is neither read nor checked).
func TestImageReadSlices(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	vol := testVolume(cs)
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b1", vol, chunkstore.Compression{Level: 3})
	im := OpenImage(s, "b1", m, cat, ImageOptions{ReadAhead: 4})
	defer im.Close()
	join := func(vecs [][]byte) []byte { return bytes.Join(vecs, nil) }
	r := rand.New(rand.NewPCG(15, 16))
	for range 300 {
		off := r.Int64N(int64(len(vol)))
		n := r.IntN(3 * cs)
		vecs, release, err := im.ReadSlices(off, n)
		got := join(vecs)
		want := min(n, len(vol)-int(off))
		if len(got) != want || !bytes.Equal(got, vol[off:off+int64(want)]) || (want < n) != (err == io.EOF) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadSlices(%d, %d) = %d bytes, %v", off, n, len(got), err)
		}
		release()
		release() // idempotent
	}
	if vecs, release, err := im.ReadSlices(int64(len(vol)), 10); len(vecs) != 0 || err != io.EOF {
		t.Fatalf("at end: %d %v", len(vecs), err)
	} else {
		release()
	}

	// A held chunk is not recycled, whatever else goes through a cache
	// too small to keep it.
	small := OpenImage(s, "b1", m, cat, ImageOptions{Cache: NewCache(int64(2 * im.bufSize))})
	defer small.Close()
	vecs, release, err := small.ReadSlices(0, 2*cs)
	if err != nil || !bytes.Equal(join(vecs), vol[:2*cs]) {
		t.Fatalf("held read: %v", err)
	}
	for off := int64(2 * cs); off < int64(len(vol)); off += int64(cs) {
		if _, err := small.ReadAt(make([]byte, cs), off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(join(vecs), vol[:2*cs]) {
		t.Fatal("a held chunk changed before release")
	}
	release()

	// Verification once per cache fill: chunk 6 (text) is corrupt in the
	// pack; the first read fails. After the pack is repaired the chunk is
	// read and verified once, and later reads hit the cache: corrupting
	// the pack again changes nothing and reads nothing.
	id6, _ := chunkAt(t, s, "b1", m, 6)
	loc6, _ := cat.Locate(context.Background(), id6)
	c := NewCache(64 << 20)
	im3 := OpenImage(s, "b1", m, cat, ImageOptions{Cache: c})
	defer im3.Close()
	be.corrupt(t, packName(loc6.Pack), int(loc6.Offset+loc6.Length/2))
	if _, rel, err := im3.ReadSlices(6*int64(cs), 100); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("corrupt chunk on first read: %v", err)
	} else {
		rel()
	}
	be.corrupt(t, packName(loc6.Pack), int(loc6.Offset+loc6.Length/2)) // flip back
	reads := be.readCount(loc6)
	for i := range 3 {
		vecs, rel, err := im3.ReadSlices(6*int64(cs), cs)
		if err != nil || !bytes.Equal(join(vecs), vol[6*cs:7*cs]) {
			t.Fatalf("read %d of the repaired chunk: %v", i, err)
		}
		rel()
		if i == 0 {
			be.corrupt(t, packName(loc6.Pack), int(loc6.Offset+loc6.Length/2))
		}
	}
	if got := be.readCount(loc6) - reads; got != 1 {
		t.Fatalf("chunk read from the pack %d times after repair, want 1 (cache hits must not re-read or re-verify)", got)
	}
}
