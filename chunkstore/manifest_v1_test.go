package chunkstore

import (
	"encoding/binary"
	"errors"
	"testing"
)

// buildRawManifest writes a version-1 manifest with an uncompressed body,
// whatever it holds.
func buildRawManifest(cs int, size int64, ids []ID, refs []uint32) []byte {
	b := []byte(manifestV1Magic)
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

// buildZstdManifest is buildRawManifest with the body compressed, as
// volback's format 1 wrote them.
func buildZstdManifest(cs int, size int64, ids []ID, refs []uint32) []byte {
	raw := buildRawManifest(cs, size, ids, refs)
	body, codec := compressBody(raw[manifestHeaderSize : len(raw)-32])
	b := append([]byte(nil), raw[:manifestHeaderSize]...)
	b[manifestHeaderSize-5] = byte(codec)
	binary.LittleEndian.PutUint32(b[manifestHeaderSize-4:], uint32(len(body)))
	b = append(b, body...)
	d := Sum(b)
	return append(b, d[:]...)
}

func TestDecodeManifestV1(t *testing.T) {
	ids := []ID{Sum([]byte("a")), Sum([]byte("b"))}
	refs := make([]uint32, 1<<12)
	refs[1], refs[2], refs[4000] = 1, 2, 1
	for _, data := range [][]byte{buildRawManifest(16<<10, 1<<12*16<<10-5, ids, refs), buildZstdManifest(16<<10, 1<<12*16<<10-5, ids, refs)} {
		m, digest, err := DecodeManifest(data)
		if err != nil || digest != Sum(data[:len(data)-32]) {
			t.Fatal(err)
		}
		if m.Slots() != 1 || m.Chunks() != 1<<12 || m.Refs() != 2 || m.v1.Len() != 1<<12 {
			t.Fatalf("slots %d, chunks %d, refs %d", m.Slots(), m.Chunks(), m.Refs())
		}
		if id, ok := m.v1.Chunk(4000); !ok || id != ids[0] {
			t.Fatal("chunk 4000 lost")
		}
	}
	empty, _, err := DecodeManifest(buildRawManifest(64<<10, 0, nil, nil))
	if err != nil || empty.Slots() != 0 || len(empty.Segments) != 0 {
		t.Fatalf("empty v1 manifest: %v", err)
	}
	bad := map[string][]byte{
		"ref past table": buildRawManifest(64<<10, 2*64<<10, []ID{Sum(nil)}, []uint32{1, 2}),
		"chunks":         buildRawManifest(64<<10, 3*64<<10, []ID{Sum(nil)}, []uint32{1, 0}),
		"unique":         buildRawManifest(64<<10, 64<<10, ids, []uint32{1}),
	}
	for name, b := range bad {
		if _, _, err := DecodeManifest(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
