package chunkstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/volback/volback/chunkstore/crypt"
	"github.com/volback/volback/drivers/repo"
)

func TestSegmentRoundTrip(t *testing.T) {
	cs := 64 << 10
	m := NewManifest(int64(3*DefaultSegmentChunks*cs)+1000, cs) // a short last chunk in slot 3
	if m.Slots() != 4 {
		t.Fatalf("%d slots", m.Slots())
	}
	if first, n := m.SlotRange(3); first != 3*DefaultSegmentChunks || n != 1 || m.ChunkLen(first) != 1000 {
		t.Fatalf("slot 3: first %d, %d chunks, last %d bytes", first, n, m.ChunkLen(first))
	}
	g := m.NewSegment(1)
	base := g.First
	a, b, c := Sum([]byte("a")), Sum([]byte("b")), Sum([]byte("c"))
	if !g.Set(base+1, a) || !g.Set(base+2, b) || g.Set(base+3, a) || !g.Set(base+5, c) {
		t.Fatal("Set did not report first uses")
	}
	g.Set(base+5, a) // c is replaced: Encode drops it
	data, digest, ids := g.Encode()
	if digest != Sum(data[:len(data)-32]) {
		t.Fatal("digest is not the BLAKE3 of what precedes it")
	}
	if len(ids) != 2 || ids[0] != a || ids[1] != b {
		t.Fatalf("ID table %v, want a, b in first-use order", ids)
	}
	got, d2, err := DecodeSegment(data)
	if err != nil || d2 != digest || got.Slot != 1 || got.Len() != DefaultSegmentChunks || len(got.IDs) != 2 {
		t.Fatalf("decoded slot %d, %d chunks, %d IDs: %v", got.Slot, got.Len(), len(got.IDs), err)
	}
	got.First = base
	want := map[int64]ID{1: a, 2: b, 3: a, 5: a}
	for i := range int64(got.Len()) {
		id, ok := got.Chunk(base + i)
		w, wok := want[i]
		if ok != wok || id != w {
			t.Fatalf("chunk %d = %s %v, want %s %v", i, id, ok, w, wok)
		}
	}
	// Set on a decoded segment keeps deduplicating; SetZero makes a hole.
	got.Set(base, b)
	got.SetZero(base + 1)
	if len(got.IDs) != 2 {
		t.Fatalf("Set duplicated an ID: %d IDs", len(got.IDs))
	}
	// The encoding depends only on content: two ways to build it agree.
	g2 := m.NewSegment(1)
	for i := range int64(got.Len()) {
		if id, ok := got.Chunk(base + i); ok {
			g2.Set(base+i, id)
		}
	}
	e1, _, _ := got.Encode()
	e2, _, _ := g2.Clone().Encode()
	if string(e1) != string(e2) {
		t.Fatal("same content, different encodings")
	}
	if !m.NewSegment(2).Empty() || got.Empty() {
		t.Fatal("Empty is wrong")
	}
}

// writeManifest stores a manifest of size bytes whose chunks set[i] hold
// IDs (absent: zero), and returns its head and digest.
func writeManifest(t *testing.T, s *Store, backup string, size int64, set map[int64]ID) (*Manifest, ID) {
	t.Helper()
	ctx := context.Background()
	w := s.NewManifestWriter(backup, size)
	m := w.Manifest()
	for slot := range m.Slots() {
		g := m.NewSegment(slot)
		first, n := m.SlotRange(slot)
		for i := first; i < first+int64(n); i++ {
			if id, ok := set[i]; ok {
				g.Set(i, id)
			}
		}
		if _, _, err := w.Put(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	d, err := w.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, d2, err := s.LoadManifest(ctx, backup)
	if err != nil || d2 != d {
		t.Fatalf("load: %v", err)
	}
	return got, d
}

func TestManifestWriterWalkAndDelete(t *testing.T) {
	s, be := newTestStore(t, 16<<10)
	ctx := context.Background()
	const backup = "b1"
	seg := int64(DefaultSegmentChunks)
	size := 5*seg*(16<<10) - 100 // five slots, the last chunk short
	x, y, z := Sum([]byte("x")), Sum([]byte("y")), Sum([]byte("z"))
	set := map[int64]ID{0: x, 1: y, 2: x, 2*seg + 7: x, 2*seg + 8: z, 5*seg - 1: y}
	m, _ := writeManifest(t, s, backup, size, set)
	// Slots 1 and 3 are all zeros: no segment, nothing stored.
	if len(m.Segments) != 3 || m.Segments[1].Slot != 2 || m.Refs() != 2+2+1 {
		t.Fatalf("segments %+v, refs %d", m.Segments, m.Refs())
	}
	if _, ok := m.Find(1); ok {
		t.Fatal("slot 1 has a segment")
	}
	if _, err := be.Stat(ctx, SegmentName(backup, 3)); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("a fourth segment object exists: %v", err)
	}
	k, ok := m.Find(2)
	g, err := s.LoadSegment(ctx, backup, m, k)
	if !ok || err != nil || g.First != 2*seg {
		t.Fatalf("slot 2: %v %v", ok, err)
	}
	if id, ok := g.Chunk(2*seg + 8); !ok || id != z {
		t.Fatal("chunk 2*seg+8 lost")
	}
	// The reference list: each segment's table in slot order, from any position.
	want := []ID{x, y, x, z, y}
	for _, head := range []*Manifest{m, nil} {
		for from := range int64(len(want) + 1) {
			var got []ID
			err := s.WalkRefs(ctx, backup, head, from, func(pos int64, ids []ID) error {
				if pos != from+int64(len(got)) {
					t.Fatalf("pos %d after %d from %d", pos, len(got), from)
				}
				got = append(got, ids...)
				return nil
			})
			if err != nil || len(got) != len(want)-int(from) {
				t.Fatalf("from %d (head %v): %d ids, %v", from, head != nil, len(got), err)
			}
			for i := range got {
				if got[i] != want[int(from)+i] {
					t.Fatalf("from %d: ref %d differs", from, i)
				}
			}
		}
	}
	// A segment that is not the one the head names is refused.
	other, _, _ := m.NewSegment(0).Clone(), 0, 0
	other.Set(0, z)
	data, _, _ := other.Encode()
	be.Put(ctx, SegmentName(backup, 0), data)
	if _, err := s.LoadSegment(ctx, backup, m, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("swapped segment: %v", err)
	}
	// Delete removes the head and every segment, also after an interrupted delete.
	be.Delete(ctx, SegmentName(backup, 2))
	if err := s.DeleteManifest(ctx, backup); err != nil {
		t.Fatal(err)
	}
	n := 0
	be.List(ctx, "manifests/", func(repo.Info) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d manifest objects left", n)
	}
	if err := s.DeleteManifest(ctx, backup); err != nil {
		t.Fatal(err)
	}
}

func TestManifestSparse1TiB(t *testing.T) {
	s, be := newTestStore(t, 64<<10)
	chunks := int64(1<<40) / (64 << 10)
	set := map[int64]ID{}
	// 128 pieces of 64 MiB spread evenly, as the bench's W8.
	for p := range int64(128) {
		for i := range int64(1024) {
			set[p*chunks/128+i] = Sum(binary.LittleEndian.AppendUint64(nil, uint64(p<<20+i)))
		}
	}
	m, _ := writeManifest(t, s, "big", 1<<40, set)
	head := len(be.objs[ManifestName("big")])
	if len(m.Segments) != 128 || head > 128*40+128 {
		t.Fatalf("%d segments, head %d bytes", len(m.Segments), head)
	}
	if m.Refs() != 128*1024 {
		t.Fatalf("refs %d", m.Refs())
	}
}

func TestDecodeManifestRefuses(t *testing.T) {
	m := NewManifest(5*DefaultSegmentChunks*(64<<10), 64<<10)
	m.Segments = []SegmentRef{{Slot: 1, Unique: 3, Digest: Sum(nil)}, {Slot: 3, Unique: 1, Digest: Sum([]byte("x"))}}
	base, _ := m.Encode()
	if _, _, err := DecodeManifest(base); err != nil {
		t.Fatal(err)
	}
	mut := func(f func([]byte)) []byte { b := append([]byte(nil), base...); f(b); return reDigest(b) }
	cases := map[string][]byte{
		"short":          base[:40],
		"digest":         func() []byte { b := append([]byte(nil), base...); b[len(b)-1] ^= 1; return b }(),
		"magic":          mut(func(b []byte) { b[0] = 'X' }),
		"chunk size":     mut(func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 3000) }),
		"chunks":         mut(func(b []byte) { binary.LittleEndian.PutUint64(b[20:], 6) }),
		"size":           mut(func(b []byte) { binary.LittleEndian.PutUint64(b[12:], 7*64<<10) }),
		"segment chunks": mut(func(b []byte) { binary.LittleEndian.PutUint32(b[28:], 3000) }),
		"segment small":  mut(func(b []byte) { binary.LittleEndian.PutUint32(b[28:], 2) }),
		"count":          mut(func(b []byte) { binary.LittleEndian.PutUint32(b[32:], 3) }),
		"refs":           mut(func(b []byte) { binary.LittleEndian.PutUint64(b[36:], 5) }),
		"slot order":     mut(func(b []byte) { binary.LittleEndian.PutUint32(b[headFixedSize+headEntrySize:], 1) }),
		"slot range":     mut(func(b []byte) { binary.LittleEndian.PutUint32(b[headFixedSize+headEntrySize:], 5) }),
		"unique zero":    mut(func(b []byte) { binary.LittleEndian.PutUint32(b[headFixedSize+4:], 0) }),
	}
	for name, b := range cases {
		if _, _, err := DecodeManifest(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestDecodeSegmentRefuses(t *testing.T) {
	m := NewManifest(int64(DefaultSegmentChunks)*(64<<10), 64<<10)
	g := m.NewSegment(0)
	g.Set(0, Sum([]byte("a")))
	g.Set(3, Sum([]byte("b")))
	base, _, _ := g.Encode()
	mut := func(f func([]byte)) []byte { b := append([]byte(nil), base...); f(b); return reDigest(b) }
	cases := map[string][]byte{
		"short":       base[:20],
		"digest":      func() []byte { b := append([]byte(nil), base...); b[len(b)-1] ^= 1; return b }(),
		"magic":       mut(func(b []byte) { b[0] = 'X' }),
		"no chunks":   mut(func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 0) }),
		"chunks":      mut(func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 5) }),
		"unique":      mut(func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 1) }),
		"no unique":   mut(func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 0) }),
		"codec":       mut(func(b []byte) { b[20] = 9 }),
		"body length": mut(func(b []byte) { binary.LittleEndian.PutUint32(b[21:], 3) }),
		"slot":        mut(func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 1<<31) }),
	}
	for name, b := range cases {
		if _, _, err := DecodeSegment(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	if _, _, err := DecodeSegment(buildRawSegment(0, []ID{Sum(nil)}, []uint32{1, 2})); err == nil || !strings.Contains(err.Error(), "refers to ID 2 of 1") {
		t.Errorf("bad ref: %v", err)
	}
	if _, _, err := DecodeSegment(buildRawSegment(0, []ID{Sum(nil)}, []uint32{1, 0})); err != nil {
		t.Errorf("raw segment refused: %v", err)
	}
}

// reDigest recomputes an object's trailing digest after a test edits it,
// so the checks behind the digest are exercised.
func reDigest(b []byte) []byte {
	d := Sum(b[:len(b)-32])
	copy(b[len(b)-32:], d[:])
	return b
}

// buildRawSegment writes a segment with an uncompressed body, whatever it holds.
func buildRawSegment(slot uint32, ids []ID, refs []uint32) []byte {
	b := []byte(segmentMagic)
	b = binary.LittleEndian.AppendUint32(b, slot)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(refs)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)))
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)*32+len(refs)*4))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	for _, r := range refs {
		b = binary.LittleEndian.AppendUint32(b, r)
	}
	d := Sum(b)
	return append(b, d[:]...)
}

func TestRepositoryUpgradeToVersion3(t *testing.T) {
	ctx := context.Background()
	be := newMemRepo()
	be.Put(ctx, configName, []byte(`{"format":"volback","version":1,"id":"0b6c8a8e-8d0b-4e3c-9a43-2a3f3a0e6c11","chunk_size":65536,"hash":"blake3-256","created_at":"2026-11-25T20:41:00Z"}`))
	s, err := Open(ctx, be)
	if err != nil || s.Config().Version != 1 {
		t.Fatalf("open v1: %v", err)
	}
	// A version-1 manifest is read as one segment.
	ids := []ID{Sum([]byte("p")), Sum([]byte("q"))}
	be.Put(ctx, ManifestName("old"), buildRawManifest(64<<10, 4*64<<10, ids, []uint32{1, 0, 2, 1}))
	m, _, err := s.LoadManifest(ctx, "old")
	if err != nil || len(m.Segments) != 1 || m.Refs() != 2 || m.Slots() != 1 {
		t.Fatalf("v1 manifest: %+v %v", m, err)
	}
	g, err := s.LoadSegment(ctx, "old", m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := g.Chunk(2); !ok || id != ids[1] {
		t.Fatal("v1 chunk 2 lost")
	}
	var walked []ID
	s.WalkRefs(ctx, "old", m, 1, func(_ int64, x []ID) error { walked = append(walked, x...); return nil })
	if len(walked) != 1 || walked[0] != ids[1] {
		t.Fatalf("v1 refs from 1: %v", walked)
	}
	// The first segmented manifest upgrades the config to version 3.
	writeManifest(t, s, "new", 64<<10, map[int64]ID{0: ids[0]})
	again, err := Open(ctx, be)
	if err != nil || again.Config().Version != 3 || again.Config().ID != s.Config().ID || again.Config().Hash != hashPlain {
		t.Fatalf("after upgrade: %+v %v", again.Config(), err)
	}
	// The old manifest still reads after the upgrade.
	if m, _, err := again.LoadManifest(ctx, "old"); err != nil || m.Refs() != 2 {
		t.Fatalf("v1 manifest after upgrade: %v", err)
	}
	be.Put(ctx, configName, []byte(`{"format":"volback","version":4,"id":"0b6c8a8e-8d0b-4e3c-9a43-2a3f3a0e6c11","chunk_size":65536,"hash":"blake3-256","created_at":"2026-11-25T20:41:00Z"}`))
	if _, err := Open(ctx, be); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "format version 4") || !strings.Contains(err.Error(), "upgrade volback") {
		t.Fatalf("version 4: %v", err)
	}
}

// An encrypted repository written as version 2 (sealed whole manifests)
// opens, reads its old manifests, and is upgraded to version 3, still
// encrypted with the same key, by its first segmented manifest.
func TestEncryptedUpgradeFromVersion2(t *testing.T) {
	ctx := context.Background()
	be := newMemRepo()
	s := initEncrypted(t, be, crypt.XChaCha20Poly1305, "pw")
	var cfg map[string]any
	json.Unmarshal(be.objs[configName], &cfg)
	cfg["version"] = 2
	b, _ := json.Marshal(cfg)
	be.Put(ctx, configName, b)
	ids := []ID{s.ChunkID([]byte("p")), s.ChunkID([]byte("q"))}
	be.Put(ctx, ManifestName("old"), s.sealObject(sealedManifestMagic, ManifestName("old"), buildRawManifest(64<<10, 4*64<<10, ids, []uint32{1, 0, 2, 1})))

	v2, err := Open(ctx, be)
	if err != nil || v2.Config().Version != 2 || !v2.Encrypted() {
		t.Fatalf("open v2: %+v %v", v2.Config(), err)
	}
	if _, _, err := v2.LoadManifest(ctx, "old"); !errors.Is(err, ErrNeedKey) {
		t.Fatalf("locked: %v", err)
	}
	if err := v2.Unlock(ctx, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	m, _, err := v2.LoadManifest(ctx, "old")
	if err != nil || m.Refs() != 2 {
		t.Fatalf("sealed v1 manifest: %v", err)
	}
	if g, err := v2.LoadSegment(ctx, "old", m, 0); err != nil {
		t.Fatal(err)
	} else if id, ok := g.Chunk(2); !ok || id != ids[1] {
		t.Fatal("sealed v1 chunk 2 lost")
	}
	writeManifest(t, v2, "new", 64<<10, map[int64]ID{0: ids[0]})
	again, err := Open(ctx, be)
	if err != nil || again.Config().Version != 3 || again.Config().Encryption != crypt.XChaCha20Poly1305 || again.Config().Hash != hashKeyed {
		t.Fatalf("after upgrade: %+v %v", again.Config(), err)
	}
	if err := again.Unlock(ctx, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"old", "new"} {
		if _, _, err := again.LoadManifest(ctx, name); err != nil {
			t.Fatalf("%s after upgrade: %v", name, err)
		}
	}
	// The segment and head are sealed: no plain magic in the repository.
	for name, data := range objects(be) {
		if bytes.Contains(data, []byte(segmentMagic)) || bytes.Contains(data, []byte(headMagic)) {
			t.Fatalf("%s shows a plain manifest", name)
		}
	}
}
