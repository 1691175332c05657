package chunkstore

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

func FuzzDecodeBlob(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 1))
	f.Add(EncodeBlob(nil, textBytes(r, 3000), Compression{Level: 3}))
	f.Add(EncodeBlob(nil, randomBytes(r, 100), Compression{Level: 3}))
	f.Add(EncodeBlob(nil, make([]byte, 5000), Compression{Level: 19}))
	f.Add(EncodeBlob(nil, nil, Compression{}))
	f.Add([]byte{1, 0, 0, 0x40, 0})
	f.Add([]byte{2, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, blob []byte) {
		raw, codec, err := DecodeBlob(blob, nil)
		if err != nil {
			return
		}
		if len(raw) > MaxChunkSize {
			t.Fatalf("decoded %d bytes", len(raw))
		}
		// Whatever decodes must survive a re-encode for every codec.
		for _, level := range []int{0, 1, 3} {
			again, _, err := DecodeBlob(EncodeBlob(nil, raw, Compression{Level: level}), nil)
			if err != nil || !bytes.Equal(again, raw) {
				t.Fatalf("re-encode (level %d, from %s): %v", level, codec, err)
			}
		}
	})
}

func FuzzParsePack(f *testing.F) {
	r := rand.New(rand.NewPCG(2, 2))
	var blobs []PackBlob
	for i := range 3 {
		raw := textBytes(r, 200+i*50)
		blobs = append(blobs, PackBlob{ID: Sum(raw), Blob: EncodeBlob(nil, raw, Compression{Level: 3})})
	}
	pack, _, _, _ := EncodePack(blobs)
	f.Add(pack)
	empty, _, _, _ := EncodePack(nil)
	f.Add(empty)
	f.Add([]byte("VBPACK01\xff\xff\xff\xff\x00\x00\x00\x00VBPKEND1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParsePack(t, data)
		// Again with the trailer crc made right, so mutations reach the
		// entry checks behind it.
		if n := len(data); n >= packHeaderSize+packFooterSize {
			fixed := append([]byte(nil), data...)
			count := uint64(binary.LittleEndian.Uint32(fixed[n-16:]))
			if ts := uint64(n-packFooterSize) - count*packEntrySize; count*packEntrySize <= uint64(n-packFooterSize) && ts >= uint64(packHeaderSize) {
				binary.LittleEndian.PutUint32(fixed[n-12:], crc32c(fixed[ts:n-packFooterSize]))
				checkParsePack(t, fixed)
			}
		}
	})
}

func checkParsePack(t *testing.T, data []byte) {
	{
		entries, err := ParsePack(data)
		if err != nil {
			return
		}
		// A valid pack's blobs re-pack into a pack with the same entries.
		var again []PackBlob
		for _, e := range entries {
			again = append(again, PackBlob{ID: e.ID, Blob: data[e.Offset : e.Offset+e.Length]})
		}
		pack, _, want, err := EncodePack(again)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParsePack(pack)
		if err != nil || len(got) != len(want) {
			t.Fatalf("re-parse: %v", err)
		}
		for i := range got {
			if got[i] != want[i] || got[i].ID != entries[i].ID || got[i].Codec != entries[i].Codec || got[i].RawLength != entries[i].RawLength {
				t.Fatalf("entry %d changed", i)
			}
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	m := NewManifest(7*DefaultSegmentChunks*(16<<10)+5, 16<<10)
	m.Segments = []SegmentRef{{Slot: 0, Unique: 2, Digest: Sum([]byte("a"))}, {Slot: 6, Unique: 7, Digest: Sum([]byte("b"))}}
	head, _ := m.Encode()
	f.Add(head)
	empty, _ := NewManifest(0, 64<<10).Encode()
	f.Add(empty)
	f.Add(buildRawManifest(16<<10, 3*16<<10, []ID{Sum(nil)}, []uint32{1, 0, 1}))
	f.Add(buildZstdManifest(16<<10, 5*16<<10, []ID{Sum(nil), Sum([]byte("x"))}, []uint32{1, 0, 2, 0, 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeManifest(t, data)
		// Again with the digest made right, so mutations reach the checks
		// behind it.
		if len(data) >= 32 {
			checkDecodeManifest(t, reDigest(append([]byte(nil), data...)))
		}
	})
}

func checkDecodeManifest(t *testing.T, data []byte) {
	m, digest, err := DecodeManifest(data)
	if err != nil {
		return
	}
	if digest != Sum(data[:len(data)-32]) {
		t.Fatal("digest not checked")
	}
	if m.v1 != nil {
		return // version 1 is only read
	}
	enc, d2 := m.Encode()
	if d2 != digest || string(enc) != string(data) {
		t.Fatal("a valid head does not re-encode to itself")
	}
	var refs int64
	for k, s := range m.Segments {
		if _, ok := m.Find(int(s.Slot)); !ok || int(s.Slot) >= m.Slots() {
			t.Fatalf("segment %d: slot %d not found", k, s.Slot)
		}
		refs += int64(s.Unique)
	}
	if refs != m.Refs() {
		t.Fatal("refs")
	}
}

func FuzzDecodeSegment(f *testing.F) {
	m := NewManifest(3*DefaultSegmentChunks*(16<<10), 16<<10)
	g := m.NewSegment(2)
	g.Set(g.First+1, Sum([]byte("a")))
	g.Set(g.First+9, Sum([]byte("b")))
	g.Set(g.First+10, Sum([]byte("a")))
	data, _, _ := g.Encode()
	f.Add(data)
	f.Add(buildRawSegment(5, []ID{Sum(nil)}, []uint32{1, 0, 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeSegment(t, data)
		if len(data) >= 32 {
			checkDecodeSegment(t, reDigest(append([]byte(nil), data...)))
		}
	})
}

func checkDecodeSegment(t *testing.T, data []byte) {
	g, digest, err := DecodeSegment(data)
	if err != nil {
		return
	}
	if digest != Sum(data[:len(data)-32]) {
		t.Fatal("digest not checked")
	}
	if g.Empty() {
		return // IDs no chunk uses: writers never store such a segment
	}
	// Re-encoding keeps every chunk's ID (the table may shrink and reorder).
	enc, _, ids := g.Encode()
	if len(ids) > len(g.IDs) {
		t.Fatal("re-encode grew the ID table")
	}
	g2, _, err := DecodeSegment(enc)
	if err != nil || g2.Slot != g.Slot || g2.Len() != g.Len() {
		t.Fatalf("re-decode: %v", err)
	}
	for i := range int64(g.Len()) {
		a, aok := g.Chunk(i)
		b, bok := g2.Chunk(i)
		if a != b || aok != bok {
			t.Fatalf("chunk %d changed", i)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(EncodeRecord(testRecord()))
	f.Add([]byte(`{"format_version":1}`))
	f.Add([]byte(`{"format_version":1,"id":"7d0c3f7e-1b8e-4a4e-9a63-2f1f7d7b5a10","chunk_size":16384,"manifest_digest":"` +
		Sum(nil).String() + `","created_at":"0001-01-01T00:00:00+23:59"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRecord(data)
		if err != nil {
			return
		}
		enc := EncodeRecord(r)
		r2, err := DecodeRecord(enc)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		if enc2 := EncodeRecord(r2); !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable encoding:\n%s\n%s", enc, enc2)
		}
	})
}
