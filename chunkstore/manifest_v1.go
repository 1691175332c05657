package chunkstore

import (
	"bytes"
	"encoding/binary"
)

// Whole manifests (repository formats 1 and 2; sealed in 2) are one object holding every
// chunk of the volume. This volback still reads them, as a head with one
// segment (slot 0, all chunks) kept in memory; it writes segmented
// manifests (format 3).

const (
	manifestV1Magic    = "VBMANIF1"
	manifestHeaderSize = 8 + 4 + 8 + 8 + 4 + 1 + 4
	manifestDigestSize = 32
	// maxManifestChunks refuses absurd chunk counts before anything is
	// allocated: 2^32 chunks is 64 TiB at the smallest chunk size.
	maxManifestChunks = 1 << 32
)

// decodeManifestV1 parses and verifies a version-1 manifest. Memory grows
// with the bytes actually decoded, never with a count taken on trust.
func decodeManifestV1(b []byte) (*Manifest, ID, error) {
	if len(b) < manifestHeaderSize+manifestDigestSize {
		return nil, ID{}, corruptf("manifest is %d bytes, shorter than header and digest", len(b))
	}
	if string(b[:8]) != manifestV1Magic {
		return nil, ID{}, corruptf("manifest magic is %q, want %q", b[:8], manifestV1Magic)
	}
	n := len(b) - manifestDigestSize
	digest := Sum(b[:n])
	if !bytes.Equal(digest[:], b[n:]) {
		return nil, ID{}, corruptf("manifest digest mismatch: content hashes to %s, stored digest is %x", digest, b[n:])
	}
	h := b[8:manifestHeaderSize]
	chunkSize := binary.LittleEndian.Uint32(h)
	size := binary.LittleEndian.Uint64(h[4:])
	chunks := binary.LittleEndian.Uint64(h[12:])
	unique := binary.LittleEndian.Uint32(h[20:])
	codec := Codec(h[24])
	bodyLen := binary.LittleEndian.Uint32(h[25:])
	if err := checkGeometry(chunkSize, size, chunks); err != nil {
		return nil, ID{}, err
	}
	if uint64(unique) > chunks {
		return nil, ID{}, corruptf("manifest lists %d unique IDs for %d chunks", unique, chunks)
	}
	if int(bodyLen) != n-manifestHeaderSize {
		return nil, ID{}, corruptf("manifest body length is %d, but %d bytes follow the header", bodyLen, n-manifestHeaderSize)
	}
	g, err := decodeBody(b[manifestHeaderSize:n], codec, chunks, unique)
	if err != nil {
		return nil, ID{}, err
	}
	g.Slot, g.First = 0, 0
	m := &Manifest{ChunkSize: int(chunkSize), Size: int64(size), SegmentChunks: int(max(chunks, 1)), v1: g}
	if unique > 0 {
		m.Segments = []SegmentRef{{Slot: 0, Unique: unique, Digest: digest}}
	}
	return m, digest, nil
}
