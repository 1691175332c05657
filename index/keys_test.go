package index

import (
	"bytes"
	"testing"

	"github.com/volback/volback/chunkstore"
)

func TestChunkCodecRoundTrip(t *testing.T) {
	for _, c := range []Chunk{
		{},
		testChunk(1),
		{Location: chunkstore.Location{Pack: chunkID(9), Offset: ^uint32(0), Length: ^uint32(0),
			RawLength: ^uint32(0), Codec: 255}, Refs: ^uint32(0)},
	} {
		b := encodeChunk(c)
		if len(b) != chunkValueLen {
			t.Fatalf("encoded %d bytes", len(b))
		}
		got, err := decodeChunk(b)
		if err != nil || got != c {
			t.Errorf("round trip %+v -> %+v, %v", c, got, err)
		}
	}
	// The layout is fixed: pin one encoding byte for byte.
	c := Chunk{Location: chunkstore.Location{Offset: 0x01020304, Length: 5, RawLength: 6, Codec: 1}, Refs: 7}
	c.Pack[0], c.Pack[31] = 0xAA, 0xBB
	want := append([]byte{1, 0xAA}, make([]byte, 30)...)
	want = append(want, 0xBB, 4, 3, 2, 1, 5, 0, 0, 0, 6, 0, 0, 0, 1, 7, 0, 0, 0)
	if got := encodeChunk(c); !bytes.Equal(got, want) {
		t.Errorf("encoding\n got %x\nwant %x", got, want)
	}
}

func TestChunkDecodeRefusals(t *testing.T) {
	good := encodeChunk(testChunk(3))
	bad := map[string][]byte{
		"empty":   nil,
		"short":   good[:49],
		"long":    append(append([]byte{}, good...), 0),
		"version": append([]byte{2}, good[1:]...),
		"zero":    make([]byte, chunkValueLen),
	}
	for name, b := range bad {
		if c, err := decodeChunk(b); err == nil {
			t.Errorf("%s: decoded %+v", name, c)
		}
	}
}

func TestChunkKeys(t *testing.T) {
	id := chunkID(5)
	k := chunkKey("repo", id)
	if !bytes.Equal(k, append([]byte("chk/repo/"), id[:]...)) {
		t.Errorf("chunk key %q", k)
	}
	if bytes.HasPrefix(chunkKey("ab", id), chunkPrefix("a")) {
		t.Error("repo ab's keys fall under repo a's prefix")
	}
}

func FuzzDecodeChunk(f *testing.F) {
	f.Add(encodeChunk(testChunk(1)))
	f.Add(encodeChunk(Chunk{}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(make([]byte, chunkValueLen))
	f.Add(append([]byte{2}, make([]byte, chunkValueLen-1)...))
	f.Add(make([]byte, chunkValueLen+1))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeChunk(b)
		if err != nil {
			return
		}
		// Anything accepted is exactly a valid encoding.
		if again := encodeChunk(c); !bytes.Equal(again, b) {
			t.Fatalf("decode(%x) = %+v re-encodes to %x", b, c, again)
		}
	})
}
