package chunkstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volback/volback/drivers/repo"
)

func TestIDParse(t *testing.T) {
	id := Sum([]byte("hello"))
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseID(%s) = %s, %v", id, got, err)
	}
	for _, bad := range []string{"", "00", strings.Repeat("g", 64), id.String() + "00"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
	if packName(id) != "packs/"+id.String() || ManifestName("b") != "manifests/b" || RecordName("b") != "backups/b" {
		t.Error("object names do not follow docs/FORMAT.md")
	}
}

func TestIsZero(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 4095, 65536, 65537, 200000} {
		b := make([]byte, n)
		if !IsZero(b) {
			t.Fatalf("IsZero(zeros[%d]) = false", n)
		}
		for _, pos := range []int{0, n / 2, n - 1} {
			if n == 0 {
				continue
			}
			b[pos] = 1
			if IsZero(b) {
				t.Fatalf("IsZero with byte %d of %d set = true", pos, n)
			}
			b[pos] = 0
		}
	}
}

func TestBlobRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	text := textBytes(r, 64<<10)
	random := randomBytes(r, 64<<10)
	zeros := make([]byte, 64<<10)
	big := textBytes(r, MaxChunkSize)
	cases := []struct {
		name  string
		raw   []byte
		level int
		codec Codec
	}{
		{"text-none", text, 0, CodecRaw},
		{"text-1", text, 1, CodecZstd},
		{"text-3", text, 3, CodecZstd},
		{"text-7", text, 7, CodecZstd},
		{"text-19", text, 19, CodecZstd},
		{"random-3", random, 3, CodecRaw}, // incompressible: stored raw
		{"zeros-1", zeros, 1, CodecZstd},
		{"empty-3", nil, 3, CodecRaw},
		{"max-chunk-3", big, 3, CodecZstd},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			blob := EncodeBlob([]byte("prefix"), c.raw, Compression{Level: c.level})
			if string(blob[:6]) != "prefix" {
				t.Fatal("EncodeBlob did not append to dst")
			}
			blob = blob[6:]
			if Codec(blob[0]) != c.codec {
				t.Fatalf("codec %s, want %s", Codec(blob[0]), c.codec)
			}
			if c.codec == CodecZstd && len(blob) >= len(c.raw) {
				t.Fatalf("zstd blob %d bytes is not smaller than raw %d", len(blob), len(c.raw))
			}
			got, codec, err := DecodeBlob(blob, nil)
			if err != nil || codec != c.codec || !bytes.Equal(got, c.raw) {
				t.Fatalf("DecodeBlob: codec %s err %v, equal %v", codec, err, bytes.Equal(got, c.raw))
			}
			// dst is reused when large enough.
			dst := make([]byte, 0, len(c.raw)+10)
			got, _, _ = DecodeBlob(blob, dst)
			if len(c.raw) > 0 && &got[0] != &dst[:1][0] {
				t.Error("DecodeBlob did not reuse dst")
			}
		})
	}
}

func TestDecodeBlobRefuses(t *testing.T) {
	raw := textBytes(rand.New(rand.NewPCG(3, 4)), 10000)
	z := EncodeBlob(nil, raw, Compression{Level: 3})
	r := EncodeBlob(nil, raw, Compression{})
	mut := func(b []byte, f func([]byte)) []byte { b = append([]byte(nil), b...); f(b); return b }
	cases := map[string][]byte{
		"short":            {0, 1},
		"unknown codec":    mut(r, func(b []byte) { b[0] = 2 }),
		"raw too long":     mut(r, func(b []byte) { binary.LittleEndian.PutUint32(b[1:], 10001) }),
		"raw truncated":    r[:len(r)-1],
		"raw over max":     mut(r, func(b []byte) { binary.LittleEndian.PutUint32(b[1:], MaxChunkSize+1) }),
		"zstd length lie":  mut(z, func(b []byte) { binary.LittleEndian.PutUint32(b[1:], 9999) }),
		"zstd length lie+": mut(z, func(b []byte) { binary.LittleEndian.PutUint32(b[1:], 10001) }),
		"zstd truncated":   z[:len(z)-3],
		"zstd garbage":     mut(z, func(b []byte) { copy(b[5:], "garbage!") }),
	}
	for name, b := range cases {
		if _, _, err := DecodeBlob(b, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func testBlobs(t *testing.T, n int) ([]PackBlob, [][]byte) {
	r := rand.New(rand.NewPCG(5, 6))
	var blobs []PackBlob
	var raws [][]byte
	for i := range n {
		var raw []byte
		if i%2 == 0 {
			raw = textBytes(r, 1000+i*100)
		} else {
			raw = randomBytes(r, 1000+i*100)
		}
		raws = append(raws, raw)
		blobs = append(blobs, PackBlob{ID: Sum(raw), Blob: EncodeBlob(nil, raw, Compression{Level: 3})})
	}
	return blobs, raws
}

func TestPackBuildParse(t *testing.T) {
	blobs, raws := testBlobs(t, 10)
	pack, id, entries, err := EncodePack(blobs)
	if err != nil {
		t.Fatal(err)
	}
	if id != Sum(pack) || string(pack[:8]) != "VBPACK01" || string(pack[len(pack)-8:]) != "VBPKEND1" {
		t.Fatal("pack id or magic wrong")
	}
	got, err := ParsePack(pack)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(entries) {
		t.Fatalf("%d entries, want %d", len(got), len(entries))
	}
	for i, e := range got {
		if e != entries[i] || e.Pack != id {
			t.Fatalf("entry %d = %+v, want %+v", i, e, entries[i])
		}
		raw, _, err := DecodeBlob(pack[e.Offset:e.Offset+e.Length], nil)
		if err != nil || !bytes.Equal(raw, raws[i]) || Sum(raw) != e.ID {
			t.Fatalf("blob %d does not decode to its chunk: %v", i, err)
		}
	}

	// The same through the backend with ranged reads.
	s, be := newTestStore(t, 64<<10)
	ctx := context.Background()
	be.Put(ctx, packName(id), pack)
	got2, err := s.ReadPackEntries(ctx, id)
	if err != nil || len(got2) != len(entries) || got2[3] != entries[3] {
		t.Fatalf("ReadPackEntries: %v", err)
	}
	if _, err := s.ReadPackEntries(ctx, Sum([]byte("missing"))); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("missing pack: %v", err)
	}

	// An empty pack is valid.
	empty, _, _, _ := EncodePack(nil)
	if e, err := ParsePack(empty); err != nil || len(e) != 0 {
		t.Fatalf("empty pack: %v %v", e, err)
	}
}

func TestParsePackRefuses(t *testing.T) {
	blobs, _ := testBlobs(t, 4)
	pack, _, entries, _ := EncodePack(blobs)
	ts := len(pack) - 16 - len(entries)*packEntrySize
	mut := func(f func([]byte)) []byte { b := append([]byte(nil), pack...); f(b); return b }
	// refix recomputes the trailer crc so validation past it is exercised.
	refix := func(b []byte) {
		binary.LittleEndian.PutUint32(b[len(b)-12:], crc32c(b[ts:len(b)-16]))
	}
	entry := func(b []byte, i int) []byte { return b[ts+i*packEntrySize:] }
	cases := map[string][]byte{
		"short":           pack[:20],
		"header magic":    mut(func(b []byte) { b[0] = 'X' }),
		"footer magic":    mut(func(b []byte) { b[len(b)-1] = 'X' }),
		"crc":             mut(func(b []byte) { b[ts+40] ^= 1 }),
		"count too big":   mut(func(b []byte) { binary.LittleEndian.PutUint32(b[len(b)-16:], 1<<31) }),
		"count too small": mut(func(b []byte) { binary.LittleEndian.PutUint32(b[len(b)-16:], 3) }),
		"offset in header": mut(func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, 0)[32:], 4)
			refix(b)
		}),
		"overlap": mut(func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, 1)[32:], entries[0].Offset+1)
			refix(b)
		}),
		"past trailer": mut(func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, 3)[36:], entries[3].Length+100)
			refix(b)
		}),
		"unknown codec": mut(func(b []byte) { entry(b, 2)[44] = 7; refix(b) }),
		"raw length over max": mut(func(b []byte) {
			binary.LittleEndian.PutUint32(entry(b, 2)[40:], MaxChunkSize+1)
			refix(b)
		}),
		"blob header disagrees": mut(func(b []byte) { b[entries[1].Offset+1] ^= 1 }),
	}
	for name, b := range cases {
		if _, err := ParsePack(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestPackerConcurrent(t *testing.T) {
	s, be := newTestStore(t, 64<<10)
	r := rand.New(rand.NewPCG(7, 8))
	// 40 MiB of mixed chunks, with repeats, so several packs are written.
	var chunks [][]byte
	for i := range 640 {
		switch i % 4 {
		case 0, 1:
			chunks = append(chunks, randomBytes(r, 64<<10))
		case 2:
			chunks = append(chunks, textBytes(r, 64<<10))
		case 3:
			chunks = append(chunks, chunks[r.IntN(len(chunks))]) // duplicate
		}
	}
	col := &collector{}
	p := s.NewPacker(context.Background(), Compression{Level: 3}, PackerOptions{Uploaders: 2, Commit: col.commit})
	var wg sync.WaitGroup
	var stored sync.Map
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(chunks); i += 8 {
				buf := append([]byte(nil), chunks[i]...)
				seq, n, err := p.Add(Sum(buf), buf)
				if err != nil || seq == 0 {
					t.Error(seq, err)
					return
				}
				clear(buf) // raw may be reused once Add returns
				if n > 0 {
					stored.Store(Sum(chunks[i]), n)
				}
			}
		}()
	}
	wg.Wait()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	entries := col.all()
	unique := map[ID][]byte{}
	for _, c := range chunks {
		unique[Sum(c)] = c
	}
	// Every chunk is stored; one added again after its pack was committed
	// is stored again (a backup asks the catalog first), never twice in
	// one pack.
	inPack := map[[2]ID]bool{}
	for _, e := range entries {
		if inPack[[2]ID{e.Pack, e.ID}] {
			t.Fatalf("chunk %s twice in pack %s", e.ID, e.Pack)
		}
		inPack[[2]ID{e.Pack, e.ID}] = true
		delete(unique, e.ID)
	}
	if len(unique) != 0 || len(entries) > len(chunks) {
		t.Fatalf("%d chunks not stored, %d entries", len(unique), len(entries))
	}
	for _, c := range chunks {
		unique[Sum(c)] = c
	}
	packs := map[ID]bool{}
	for _, e := range entries {
		packs[e.Pack] = true
		raw, err := s.ReadChunk(context.Background(), e.ID, e.Location, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, unique[e.ID]) {
			t.Fatalf("chunk %s reads back different bytes", e.ID)
		}
		if n, _ := stored.Load(e.ID); n != int(e.Length) {
			t.Fatalf("Add reported %v stored bytes, entry says %d", n, e.Length)
		}
	}
	if len(packs) < 3 {
		t.Fatalf("only %d packs for ~23 MiB stored", len(packs))
	}
	for id := range packs {
		data := be.objs[packName(id)]
		if len(data) > packTarget || Sum(data) != id {
			t.Fatalf("pack %s: %d bytes, hash ok %v", id, len(data), Sum(data) == id)
		}
		if _, err := ParsePack(data); err != nil {
			t.Fatal(err)
		}
	}
	// Adding after Close is refused.
	if _, _, err := p.Add(Sum([]byte("x")), []byte("x")); err == nil {
		t.Fatal("Add after Close succeeded")
	}
}

func TestPackerUploadErrorAndBackpressure(t *testing.T) {
	s, be := newTestStore(t, 64<<10)
	release := make(chan struct{})
	var puts sync.WaitGroup
	be.putHook = func(string) { <-release }
	be.putErr = errors.New("disk full")
	p := s.NewPacker(context.Background(), Compression{}, PackerOptions{Uploaders: 1})
	r := rand.New(rand.NewPCG(9, 10))
	chunk := randomBytes(r, 64<<10)
	var added atomicInt
	done := make(chan error, 1)
	puts.Add(1)
	go func() {
		defer puts.Done()
		for i := 0; ; i++ {
			binary.LittleEndian.PutUint64(chunk, uint64(i))
			if _, _, err := p.Add(Sum(chunk), chunk); err != nil {
				done <- err
				return
			}
			added.add(1)
		}
	}()
	// Wait until Add stalls.
	for last, deadline := -1, time.Now().Add(10*time.Second); ; {
		time.Sleep(200 * time.Millisecond)
		n := added.get()
		if n == last || time.Now().After(deadline) {
			break
		}
		last = n
	}
	// One pack is uploading, one is filled and queued, and Add is blocked:
	// exactly two packs' worth of chunks are buffered, never more.
	perPack := (packTarget - packHeaderSize - packFooterSize) / (len(chunk) + blobHeaderSize + packEntrySize)
	if n := added.get(); n != 2*perPack {
		t.Fatalf("%d chunks accepted while uploads were stuck; want %d (2 packs)", n, 2*perPack)
	}
	close(release)
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "uploading pack") {
		t.Fatalf("Add error = %v", err)
	}
	if err := p.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Close error = %v", err)
	}
	puts.Wait()
}

func TestPackerAbort(t *testing.T) {
	s, be := newTestStore(t, 64<<10)
	p := s.NewPacker(context.Background(), Compression{Level: 1}, PackerOptions{Uploaders: 2})
	raw := textBytes(rand.New(rand.NewPCG(1, 1)), 64<<10)
	if _, _, err := p.Add(Sum(raw), raw); err != nil {
		t.Fatal(err)
	}
	p.Abort()
	p.Abort()
	if err := p.Close(); err == nil {
		t.Fatal("Close after Abort succeeded")
	}
	n := 0
	be.List(context.Background(), "packs/", func(repo.Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d packs written after Abort", n)
	}
}

func TestReadChunkCorruption(t *testing.T) {
	s, be := newTestStore(t, 64<<10)
	blobs, raws := testBlobs(t, 4)
	pack, id, entries, _ := EncodePack(blobs)
	ctx := context.Background()
	be.Put(ctx, packName(id), pack)
	for i, e := range entries {
		raw, err := s.ReadChunk(ctx, e.ID, e.Location, nil)
		if err != nil || !bytes.Equal(raw, raws[i]) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	// Wrong ID asked for: hash mismatch.
	_, err := s.ReadChunk(ctx, entries[1].ID, entries[0].Location, nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), entries[1].ID.String()) || !strings.Contains(err.Error(), id.String()) {
		t.Fatalf("hash mismatch: %v", err)
	}
	// Location disagreeing with the blob.
	loc := entries[0].Location
	loc.RawLength++
	if _, err := s.ReadChunk(ctx, entries[0].ID, loc, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("location mismatch: %v", err)
	}
	// A flipped payload byte, for both codecs.
	for _, e := range entries[:2] {
		be.corrupt(packName(id), int(e.Offset+e.Length-2))
		if _, err := s.ReadChunk(ctx, e.ID, e.Location, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped %s blob: %v", e.Codec, err)
		}
	}
	// Missing pack.
	loc = entries[2].Location
	loc.Pack = Sum(nil)
	if _, err := s.ReadChunk(ctx, entries[2].ID, loc, nil); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("missing pack: %v", err)
	}
}

func TestConfig(t *testing.T) {
	ctx := context.Background()
	be := newMemRepo()
	if _, err := Open(ctx, be); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("Open of empty repo: %v", err)
	}
	for _, cs := range []int{0, 8 << 10, 100000, 8 << 20, -1} {
		_, err := Init(ctx, be, cs)
		if err == nil || !strings.Contains(err.Error(), "power of two from 16K") {
			t.Fatalf("Init(%d) = %v", cs, err)
		}
	}
	if len(be.objs) != 0 {
		t.Fatal("refused Init wrote something")
	}
	s, err := OpenOrInit(ctx, be, 128<<10)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.Config()
	if cfg.ChunkSize != 128<<10 || cfg.Version != FormatVersion || cfg.Format != "volback" || cfg.Hash != "blake3-256" || len(cfg.ID) != 36 {
		t.Fatalf("config %+v", cfg)
	}
	if _, err := Init(ctx, be, 64<<10); err == nil || !strings.Contains(err.Error(), "already has a config") {
		t.Fatalf("second Init: %v", err)
	}
	s2, err := OpenOrInit(ctx, be, 64<<10)
	if err != nil || s2.Config() != cfg {
		t.Fatalf("reopen: %+v %v", s2.Config(), err)
	}

	// Refusals of stored configs.
	put := func(f func(map[string]any)) error {
		var m map[string]any
		json.Unmarshal(be.objs["config"], &m)
		f(m)
		b, _ := json.Marshal(m)
		b2 := newMemRepo()
		b2.objs["config"] = b
		_, err := Open(ctx, b2)
		return err
	}
	err = put(func(m map[string]any) { m["version"] = 4 })
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "version 4") || !strings.Contains(err.Error(), "upgrade volback") {
		t.Fatalf("version 4: %v", err)
	}
	for name, f := range map[string]func(map[string]any){
		"version 2 without encryption": func(m map[string]any) { m["version"] = 2; m["hash"] = "blake3-256-keyed" },
		"version 2 unkeyed":            func(m map[string]any) { m["version"] = 2; m["encryption"] = "aes-256-gcm" },
		"version 1 encrypted":          func(m map[string]any) { m["version"] = 1; m["encryption"] = "aes-256-gcm" },
		"version 3 keyed, no cipher":   func(m map[string]any) { m["hash"] = "blake3-256-keyed" },
		"version 3 cipher, unkeyed":    func(m map[string]any) { m["encryption"] = "aes-256-gcm" },
		"version 3 unknown cipher":     func(m map[string]any) { m["hash"] = "blake3-256-keyed"; m["encryption"] = "rot13" },
		"version 0":                    func(m map[string]any) { m["version"] = 0 },
		"format":                       func(m map[string]any) { m["format"] = "restic" },
		"hash":                         func(m map[string]any) { m["hash"] = "sha256" },
		"chunk size":                   func(m map[string]any) { m["chunk_size"] = 1000 },
		"id":                           func(m map[string]any) { m["id"] = "x" },
	} {
		if err := put(f); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	be.objs["config"] = []byte("{")
	if _, err := Open(ctx, be); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad JSON: %v", err)
	}
}

type atomicInt struct {
	mu sync.Mutex
	n  int
}

func (a *atomicInt) add(d int) { a.mu.Lock(); a.n += d; a.mu.Unlock() }
func (a *atomicInt) get() int  { a.mu.Lock(); defer a.mu.Unlock(); return a.n }

func TestEncodePackRefuses(t *testing.T) {
	good := EncodeBlob(nil, []byte("hello"), Compression{})
	for name, blob := range map[string][]byte{
		"short":         {0, 1},
		"unknown codec": append([]byte{3}, good[1:]...),
		"raw length":    append(good[:len(good):len(good)], 'x'),
	} {
		if _, _, _, err := EncodePack([]PackBlob{{ID: Sum(nil), Blob: good}, {ID: Sum(nil), Blob: blob}}); err == nil {
			t.Errorf("%s: EncodePack accepted a bad blob", name)
		}
	}
}

// TestPackerSync: Sync seals the pack being filled and returns only once
// the packs up to the sequence asked for are committed; a commit error
// fails the packer.
func TestPackerSync(t *testing.T) {
	s, _ := newTestStore(t, 64<<10)
	ctx := context.Background()
	release := make(chan struct{})
	col := &collector{}
	p := s.NewPacker(ctx, Compression{}, PackerOptions{Uploaders: 2, Commit: func(ctx context.Context, pack ID, e []PackEntry) error {
		<-release
		return col.commit(ctx, pack, e)
	}})
	r := rand.New(rand.NewPCG(3, 4))
	a, b := randomBytes(r, 64<<10), randomBytes(r, 64<<10)
	seqA, _, err := p.Add(Sum(a), a)
	if err != nil || seqA != 1 {
		t.Fatal(seqA, err)
	}
	if seq, n, _ := p.Add(Sum(a), a); seq != seqA || n != 0 {
		t.Fatalf("pending chunk added again: seq %d, %d bytes", seq, n)
	}
	synced := make(chan error, 1)
	go func() { synced <- p.Sync(ctx, seqA) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-synced:
		t.Fatalf("Sync returned before the commit: %v", err)
	default:
	}
	// The pack was sealed: the next chunk opens pack 2.
	if seq, _, _ := p.Add(Sum(b), b); seq != 2 {
		t.Fatalf("next chunk in pack %d, want 2", seq)
	}
	close(release)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if e := col.all(); len(e) != 1 || e[0].ID != Sum(a) {
		t.Fatalf("committed %v", e)
	}
	if err := p.Sync(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil || len(col.all()) != 2 {
		t.Fatalf("close: %v, %d entries", err, len(col.all()))
	}

	bad := s.NewPacker(ctx, Compression{}, PackerOptions{Uploaders: 1, Commit: func(context.Context, ID, []PackEntry) error { return errors.New("catalog full") }})
	seq, _, _ := bad.Add(Sum(a), a)
	if err := bad.Sync(ctx, seq); err == nil || !strings.Contains(err.Error(), "catalog full") {
		t.Fatalf("Sync after a failed commit: %v", err)
	}
	if err := bad.Close(); err == nil {
		t.Fatal("Close after a failed commit succeeded")
	}
}

// TestPackerCancelCause: an Add waiting for a pack buffer when the
// packer's context is cancelled fails with the cancel's cause (a backup
// cancelled by backup-delete --force says so), and so does Close.
func TestPackerCancelCause(t *testing.T) {
	s, be := newTestStore(t, 64<<10)
	release := make(chan struct{})
	be.putHook = func(string) { <-release } // uploads wait for the test
	ctx, cancel := context.WithCancelCause(context.Background())
	p := s.NewPacker(ctx, Compression{}, PackerOptions{Uploaders: 1, Slots: NewPackSlots(0)})
	r := rand.New(rand.NewPCG(11, 12))
	chunk := randomBytes(r, 64<<10)
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			binary.LittleEndian.PutUint64(chunk, uint64(i))
			if _, _, err := p.Add(Sum(chunk), chunk); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond) // Add is waiting for a buffer by now
	why := errors.New("cancelled by the test")
	cancel(why)
	select {
	case err := <-done:
		if !errors.Is(err, why) {
			t.Fatalf("Add after the cancel: %v; want the cause", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Add still blocked 5 s after the cancel")
	}
	close(release)
	if err := p.Close(); !errors.Is(err, why) {
		t.Fatalf("Close after the cancel: %v; want the cause", err)
	}
}
