package chunkstore

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestManifestRoundTrip(t *testing.T) {
	cs := 64 << 10
	size := int64(10*cs + 1000) // short last chunk
	m := NewManifest(size, cs)
	if m.Chunks() != 11 || m.ChunkLen(10) != 1000 || m.ChunkLen(0) != cs {
		t.Fatalf("chunks %d, last %d", m.Chunks(), m.ChunkLen(10))
	}
	a, b, c := Sum([]byte("a")), Sum([]byte("b")), Sum([]byte("c"))
	m.Set(1, a)
	m.Set(2, b)
	m.Set(3, a) // repeat
	m.Set(5, c)
	m.Set(10, b)
	m.Set(5, a) // c is replaced: Encode drops it
	data, digest := m.Encode()
	if digest != Sum(data[:len(data)-32]) {
		t.Fatal("digest is not the BLAKE3 of what precedes it")
	}
	got, d2, err := DecodeManifest(data)
	if err != nil || d2 != digest {
		t.Fatal(err)
	}
	if got.Size != size || got.ChunkSize != cs || got.Chunks() != 11 || len(got.IDs) != 2 {
		t.Fatalf("decoded %+v", got)
	}
	want := map[int]ID{1: a, 2: b, 3: a, 5: a, 10: b}
	for i := range got.Chunks() {
		id, ok := got.Chunk(i)
		w, wok := want[i]
		if ok != wok || id != w {
			t.Fatalf("chunk %d = %s %v, want %s %v", i, id, ok, w, wok)
		}
	}
	// Set on a decoded manifest keeps deduplicating, SetZero makes a hole.
	got.Set(0, b)
	got.SetZero(1)
	if len(got.IDs) != 2 {
		t.Fatalf("Set duplicated an ID: %d IDs", len(got.IDs))
	}
	if _, ok := got.Chunk(1); ok {
		t.Fatal("SetZero did not make a hole")
	}
	// Encoding depends only on content: two ways to build it agree.
	m2 := NewManifest(size, cs)
	for i := range got.Chunks() {
		if id, ok := got.Chunk(i); ok {
			m2.Set(i, id)
		}
	}
	d1, _ := got.Encode()
	d3, _ := m2.Encode()
	if string(d1) != string(d3) {
		t.Fatal("same content, different encodings")
	}
}

func TestManifestEmptyAndTiny(t *testing.T) {
	for _, size := range []int64{0, 1, 16 << 10} {
		m := NewManifest(size, 16<<10)
		data, _ := m.Encode()
		got, _, err := DecodeManifest(data)
		if err != nil || got.Size != size || got.Chunks() != m.Chunks() {
			t.Fatalf("size %d: %v", size, err)
		}
	}
}

func TestManifestSparse64GiB(t *testing.T) {
	cs := 64 << 10
	m := NewManifest(64<<30, cs)
	if m.Chunks() != 1<<20 {
		t.Fatalf("%d chunks", m.Chunks())
	}
	ids := []ID{Sum([]byte("x")), Sum([]byte("y"))}
	m.Set(0, ids[0])
	m.Set(1<<19, ids[1])
	m.Set(1<<20-1, ids[0])
	start := time.Now()
	data, _ := m.Encode()
	enc := time.Since(start)
	if len(data) > 4<<10 {
		t.Fatalf("sparse 64 GiB manifest is %d bytes; want a few hundred", len(data))
	}
	if data[32] != byte(CodecZstd) {
		t.Fatal("sparse manifest body not compressed")
	}
	got, _, err := DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := got.Chunk(1 << 19); !ok || id != ids[1] {
		t.Fatal("chunk 2^19 lost")
	}
	if _, ok := got.Chunk(5); ok {
		t.Fatal("hole became data")
	}
	t.Logf("64 GiB sparse manifest: %d bytes, encoded in %v", len(data), enc)
}

// reDigest recomputes a manifest's digest after a test edits its header,
// so the checks behind the digest are exercised.
func reDigest(b []byte) []byte {
	d := Sum(b[:len(b)-32])
	copy(b[len(b)-32:], d[:])
	return b
}

func TestDecodeManifestRefuses(t *testing.T) {
	m := NewManifest(5*64<<10, 64<<10)
	m.Set(0, Sum([]byte("a")))
	m.Set(3, Sum([]byte("b")))
	raw := func() []byte {
		// A raw-body manifest (this one is too small to compress well, but force it).
		d, _ := m.Encode()
		return d
	}
	base := raw()
	mut := func(f func([]byte)) []byte { b := append([]byte(nil), base...); f(b); return reDigest(b) }
	cases := map[string][]byte{
		"short":          base[:40],
		"digest":         func() []byte { b := append([]byte(nil), base...); b[len(b)-1] ^= 1; return b }(),
		"body byte":      func() []byte { b := append([]byte(nil), base...); b[50] ^= 1; return b }(),
		"magic":          mut(func(b []byte) { b[0] = 'X' }),
		"chunk size":     mut(func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 3000) }),
		"chunk size big": mut(func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 8<<20) }),
		"chunks":         mut(func(b []byte) { binary.LittleEndian.PutUint64(b[20:], 6) }),
		"size":           mut(func(b []byte) { binary.LittleEndian.PutUint64(b[12:], 7*64<<10) }),
		"huge": mut(func(b []byte) {
			binary.LittleEndian.PutUint64(b[12:], 1<<60)
			binary.LittleEndian.PutUint64(b[20:], 1<<60/(64<<10))
		}),
		"unique>chunks": mut(func(b []byte) { binary.LittleEndian.PutUint32(b[28:], 6) }),
		"unique":        mut(func(b []byte) { binary.LittleEndian.PutUint32(b[28:], 1) }),
		"codec":         mut(func(b []byte) { b[32] = 9 }),
		"body length":   mut(func(b []byte) { binary.LittleEndian.PutUint32(b[33:], 3) }),
	}
	for name, b := range cases {
		_, _, err := DecodeManifest(b)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	// A raw body with a ref past the ID table.
	rawM := buildRawManifest(64<<10, 2*64<<10, []ID{Sum(nil)}, []uint32{1, 2})
	if _, _, err := DecodeManifest(rawM); err == nil || !strings.Contains(err.Error(), "refers to ID 2 of 1") {
		t.Errorf("bad ref: %v", err)
	}
	good := buildRawManifest(64<<10, 2*64<<10, []ID{Sum(nil)}, []uint32{1, 0})
	if _, _, err := DecodeManifest(good); err != nil {
		t.Errorf("raw manifest refused: %v", err)
	}
}

// buildRawManifest writes a manifest with an uncompressed body, whatever it holds.
func buildRawManifest(cs int, size int64, ids []ID, refs []uint32) []byte {
	b := []byte(manifestMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(cs))
	b = binary.LittleEndian.AppendUint64(b, uint64(size))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(refs)))
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
