package chunkstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// A manifest (docs/FORMAT.md, "Manifests") is stored in pieces so that no
// reader or writer holds a whole volume's chunk map: a small head lists the
// segments, and each segment maps one slot of SegmentChunks consecutive
// chunks to chunk IDs. A slot whose chunks are all zero has no segment.
// Version-1 manifests (one object, every chunk) are still read: they
// appear as a head with one segment held in memory.

const (
	headMagic     = "VBMHEAD3"
	headFixedSize = 8 + 4 + 8 + 8 + 4 + 4 + 8
	headEntrySize = 4 + 4 + 32
	segmentMagic  = "VBMSEG03"
	segHeaderSize = 8 + 4 + 4 + 4 + 1 + 4
	digestSize    = 32
	// MinSegmentChunks and MaxSegmentChunks bound the chunks a segment
	// covers (a power of two).
	MinSegmentChunks = 1 << 2
	MaxSegmentChunks = 1 << 20
)

// DefaultSegmentChunks is how many chunks a segment covers when volback
// writes one: 1 GiB of volume at 64 KiB chunks, at most 576 KiB decoded
// (16384 refs and as many IDs).
const DefaultSegmentChunks = 1 << 14

// Manifest is a manifest head: the volume's shape and its segments, in
// slot order. It holds no chunk IDs (see Segment), so its size is about 40
// bytes per slot with data: 40 KiB for a dense 1 TiB volume.
type Manifest struct {
	ChunkSize     int
	Size          int64
	SegmentChunks int
	Segments      []SegmentRef

	v1 *Segment // a version-1 manifest's one segment, decoded with the head
}

// SegmentRef is one head entry: the slot a stored segment covers, how many
// distinct chunk IDs it lists and its digest (the BLAKE3 of its object
// before its own trailing digest).
type SegmentRef struct {
	Slot   uint32
	Unique uint32
	Digest ID
}

// NewManifest is the head of a manifest with no segments yet (all zeros)
// for a volume of size bytes, in segments of DefaultSegmentChunks.
func NewManifest(size int64, chunkSize int) *Manifest {
	return &Manifest{ChunkSize: chunkSize, Size: size, SegmentChunks: DefaultSegmentChunks}
}

// CheckSegmentChunks says why n cannot be a segment's chunk count.
func CheckSegmentChunks(n int) error {
	if n < MinSegmentChunks || n > MaxSegmentChunks || n&(n-1) != 0 {
		return fmt.Errorf("segment size %d chunks is not a power of two from %d to %d", n, MinSegmentChunks, MaxSegmentChunks)
	}
	return nil
}

func chunkCount(size int64, chunkSize int) int64 {
	return (size + int64(chunkSize) - 1) / int64(chunkSize)
}

// Chunks is the number of chunks of the volume.
func (m *Manifest) Chunks() int64 { return chunkCount(m.Size, m.ChunkSize) }

// Slots is the number of segment slots: ceil(chunks / SegmentChunks).
func (m *Manifest) Slots() int {
	return int((m.Chunks() + int64(m.SegmentChunks) - 1) / int64(m.SegmentChunks))
}

// SlotRange is the first chunk of slot and how many chunks it covers.
func (m *Manifest) SlotRange(slot int) (first int64, n int) {
	first = int64(slot) * int64(m.SegmentChunks)
	return first, int(min(int64(m.SegmentChunks), m.Chunks()-first))
}

// ChunkLen is the length of chunk i: ChunkSize except for a short last chunk.
func (m *Manifest) ChunkLen(i int64) int {
	return int(min(int64(m.ChunkSize), m.Size-i*int64(m.ChunkSize)))
}

// Refs is the length of the manifest's reference list: the segments' ID
// tables one after the other. A catalog counts one reference per element.
func (m *Manifest) Refs() int64 {
	var n int64
	for _, s := range m.Segments {
		n += int64(s.Unique)
	}
	return n
}

// Find returns the position in Segments of the segment of slot, and false
// when the slot has no segment (all its chunks are zero).
func (m *Manifest) Find(slot int) (int, bool) {
	k := sort.Search(len(m.Segments), func(k int) bool { return int(m.Segments[k].Slot) >= slot })
	return k, k < len(m.Segments) && int(m.Segments[k].Slot) == slot
}

// Encode serialises the head and returns it with its digest, the
// manifest digest records name. A version-1 manifest is encoded as the
// head of its segment, which then must be stored as segment 0.
func (m *Manifest) Encode() (data []byte, digest ID) {
	data = make([]byte, 0, headFixedSize+len(m.Segments)*headEntrySize+digestSize)
	data = append(data, headMagic...)
	data = binary.LittleEndian.AppendUint32(data, uint32(m.ChunkSize))
	data = binary.LittleEndian.AppendUint64(data, uint64(m.Size))
	data = binary.LittleEndian.AppendUint64(data, uint64(m.Chunks()))
	data = binary.LittleEndian.AppendUint32(data, uint32(m.SegmentChunks))
	data = binary.LittleEndian.AppendUint32(data, uint32(len(m.Segments)))
	data = binary.LittleEndian.AppendUint64(data, uint64(m.Refs()))
	for _, s := range m.Segments {
		data = binary.LittleEndian.AppendUint32(data, s.Slot)
		data = binary.LittleEndian.AppendUint32(data, s.Unique)
		data = append(data, s.Digest[:]...)
	}
	digest = Sum(data)
	return append(data, digest[:]...), digest
}

// DecodeManifest parses and verifies a manifest head (or a whole version-1
// manifest) and returns it with its digest.
func DecodeManifest(b []byte) (*Manifest, ID, error) {
	if len(b) >= 8 && string(b[:8]) == manifestV1Magic {
		return decodeManifestV1(b)
	}
	if len(b) < headFixedSize+digestSize {
		return nil, ID{}, corruptf("manifest is %d bytes, shorter than header and digest", len(b))
	}
	if string(b[:8]) != headMagic {
		return nil, ID{}, corruptf("manifest magic is %q, want %q (or %q)", b[:8], headMagic, manifestV1Magic)
	}
	n := len(b) - digestSize
	digest := Sum(b[:n])
	if !bytes.Equal(digest[:], b[n:]) {
		return nil, ID{}, corruptf("manifest digest mismatch: content hashes to %s, stored digest is %x", digest, b[n:])
	}
	h := b[8:headFixedSize]
	chunkSize := binary.LittleEndian.Uint32(h)
	size := binary.LittleEndian.Uint64(h[4:])
	chunks := binary.LittleEndian.Uint64(h[12:])
	segChunks := binary.LittleEndian.Uint32(h[20:])
	count := binary.LittleEndian.Uint32(h[24:])
	refs := binary.LittleEndian.Uint64(h[28:])
	if err := checkGeometry(chunkSize, size, chunks); err != nil {
		return nil, ID{}, err
	}
	if err := CheckSegmentChunks(int(segChunks)); err != nil {
		return nil, ID{}, corruptf("manifest: %v", err)
	}
	if uint64(n-headFixedSize) != uint64(count)*headEntrySize {
		return nil, ID{}, corruptf("manifest lists %d segments in %d bytes, want %d", count, n-headFixedSize, uint64(count)*headEntrySize)
	}
	m := &Manifest{ChunkSize: int(chunkSize), Size: int64(size), SegmentChunks: int(segChunks),
		Segments: make([]SegmentRef, count)}
	slots := uint64(m.Slots())
	var total uint64
	for k := range m.Segments {
		e := b[headFixedSize+k*headEntrySize:]
		s := &m.Segments[k]
		s.Slot = binary.LittleEndian.Uint32(e)
		s.Unique = binary.LittleEndian.Uint32(e[4:])
		copy(s.Digest[:], e[8:40])
		if uint64(s.Slot) >= slots {
			return nil, ID{}, corruptf("manifest segment %d is for slot %d, but the volume has %d slots", k, s.Slot, slots)
		}
		if k > 0 && s.Slot <= m.Segments[k-1].Slot {
			return nil, ID{}, corruptf("manifest segment %d (slot %d) does not follow slot %d", k, s.Slot, m.Segments[k-1].Slot)
		}
		if _, n := m.SlotRange(int(s.Slot)); s.Unique == 0 || int(s.Unique) > n {
			return nil, ID{}, corruptf("manifest segment %d lists %d IDs for %d chunks", k, s.Unique, n)
		}
		total += uint64(s.Unique)
	}
	if total != refs {
		return nil, ID{}, corruptf("manifest says %d references, its segments list %d", refs, total)
	}
	return m, digest, nil
}

// Segment maps the chunks of one slot to chunk IDs: IDs lists each
// distinct ID once, Refs holds per chunk 0 (all zeros) or k for IDs[k-1].
type Segment struct {
	Slot  int
	First int64    // index of the slot's first chunk in the volume
	IDs   []ID     // distinct IDs (in first-use order once encoded or decoded)
	Refs  []uint32 // one per chunk of the slot

	index map[ID]uint32 // ID -> ref, built by the first Set
}

// NewSegment is an all-zero segment for slot of manifest m.
func (m *Manifest) NewSegment(slot int) *Segment {
	first, n := m.SlotRange(slot)
	return &Segment{Slot: slot, First: first, Refs: make([]uint32, max(n, 0))}
}

// Clone copies g, for an incremental that starts from its parent's chunks.
func (g *Segment) Clone() *Segment {
	return &Segment{Slot: g.Slot, First: g.First, IDs: append([]ID(nil), g.IDs...), Refs: append([]uint32(nil), g.Refs...)}
}

// Len is the number of chunks the segment covers.
func (g *Segment) Len() int { return len(g.Refs) }

// Set records that chunk i (an index in the volume) holds id and reports
// whether id is new to the segment (a backup then looks it up in the
// catalog). Not safe for concurrent use.
func (g *Segment) Set(i int64, id ID) (added bool) {
	if g.index == nil {
		g.index = make(map[ID]uint32, len(g.IDs))
		for k, id := range g.IDs {
			if _, ok := g.index[id]; !ok {
				g.index[id] = uint32(k + 1)
			}
		}
	}
	ref, ok := g.index[id]
	if !ok {
		g.IDs = append(g.IDs, id)
		ref = uint32(len(g.IDs))
		g.index[id] = ref
	}
	g.Refs[i-g.First] = ref
	return !ok
}

// SetZero marks chunk i (an index in the volume) as all zeros.
func (g *Segment) SetZero(i int64) { g.Refs[i-g.First] = 0 }

// Chunk returns the ID of chunk i (an index in the volume), false when it
// is all zeros.
func (g *Segment) Chunk(i int64) (ID, bool) {
	r := g.Refs[i-g.First]
	if r == 0 {
		return ID{}, false
	}
	return g.IDs[r-1], true
}

// Empty reports whether every chunk of the segment is zero: such a slot
// is not stored.
func (g *Segment) Empty() bool {
	for _, r := range g.Refs {
		if r != 0 {
			return false
		}
	}
	return true
}

// compact renumbers refs by first use, dropping IDs no chunk refers to
// (any more), so that the encoding depends only on what each chunk holds.
func (g *Segment) compact() ([]ID, []uint32) {
	remap := make([]uint32, len(g.IDs)+1)
	var ids []ID
	refs := make([]uint32, len(g.Refs))
	for i, r := range g.Refs {
		if r == 0 {
			continue
		}
		if remap[r] == 0 {
			ids = append(ids, g.IDs[r-1])
			remap[r] = uint32(len(ids))
		}
		refs[i] = remap[r]
	}
	return ids, refs
}

var (
	manifestEncOnce sync.Once
	manifestEnc     *zstd.Encoder
)

// compressBody compresses a manifest body when that makes it smaller.
// The encoder lives as long as the process and segments are written
// throughout a backup, so its window is one segment's body (at most 576
// KiB at 16384 chunks a segment), not MaxChunkSize: its history buffer
// took 8 MiB of a 64 MiB heap limit and drove the GC back to back in W1
// (104 collections against 13 before segments).
func compressBody(body []byte) ([]byte, Codec) {
	manifestEncOnce.Do(func() {
		manifestEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
	})
	if z := manifestEnc.EncodeAll(body, nil); len(z) < len(body) {
		return z, CodecZstd
	}
	return body, CodecRaw
}

// Encode serialises the segment and returns it with its digest and its
// ID table (the segment's part of the reference list, in first-use order).
func (g *Segment) Encode() (data []byte, digest ID, ids []ID) {
	ids, refs := g.compact()
	body := make([]byte, 0, len(ids)*32+len(refs)*4)
	for _, id := range ids {
		body = append(body, id[:]...)
	}
	for _, r := range refs {
		body = binary.LittleEndian.AppendUint32(body, r)
	}
	body, codec := compressBody(body)
	data = make([]byte, 0, segHeaderSize+len(body)+digestSize)
	data = append(data, segmentMagic...)
	data = binary.LittleEndian.AppendUint32(data, uint32(g.Slot))
	data = binary.LittleEndian.AppendUint32(data, uint32(len(refs)))
	data = binary.LittleEndian.AppendUint32(data, uint32(len(ids)))
	data = append(data, byte(codec))
	data = binary.LittleEndian.AppendUint32(data, uint32(len(body)))
	data = append(data, body...)
	digest = Sum(data)
	return append(data, digest[:]...), digest, ids
}

// DecodeSegment parses and verifies a segment object against its own
// digest; the caller checks slot, size and digest against the head.
// Memory grows with the bytes decoded, never with a count taken on trust.
func DecodeSegment(b []byte) (*Segment, ID, error) {
	if len(b) < segHeaderSize+digestSize {
		return nil, ID{}, corruptf("manifest segment is %d bytes, shorter than header and digest", len(b))
	}
	if string(b[:8]) != segmentMagic {
		return nil, ID{}, corruptf("manifest segment magic is %q, want %q", b[:8], segmentMagic)
	}
	n := len(b) - digestSize
	digest := Sum(b[:n])
	if !bytes.Equal(digest[:], b[n:]) {
		return nil, ID{}, corruptf("manifest segment digest mismatch: content hashes to %s, stored digest is %x", digest, b[n:])
	}
	h := b[8:segHeaderSize]
	slot := binary.LittleEndian.Uint32(h)
	chunks := binary.LittleEndian.Uint32(h[4:])
	unique := binary.LittleEndian.Uint32(h[8:])
	codec := Codec(h[12])
	bodyLen := binary.LittleEndian.Uint32(h[13:])
	if chunks == 0 || chunks > MaxSegmentChunks {
		return nil, ID{}, corruptf("manifest segment covers %d chunks, want 1 to %d", chunks, MaxSegmentChunks)
	}
	if unique == 0 || unique > chunks {
		return nil, ID{}, corruptf("manifest segment lists %d IDs for %d chunks", unique, chunks)
	}
	if uint64(slot)*MinSegmentChunks >= maxManifestChunks {
		return nil, ID{}, corruptf("manifest segment slot %d is absurd", slot)
	}
	if int(bodyLen) != n-segHeaderSize {
		return nil, ID{}, corruptf("manifest segment body length is %d, but %d bytes follow the header", bodyLen, n-segHeaderSize)
	}
	g, err := decodeBody(b[segHeaderSize:n], codec, uint64(chunks), unique)
	if err != nil {
		return nil, ID{}, err
	}
	g.Slot = int(slot)
	return g, digest, nil
}

// decodeBody reads unique IDs and chunks refs (a segment's body, or a
// version-1 manifest's), in bounded pieces.
func decodeBody(body []byte, codec Codec, chunks uint64, unique uint32) (*Segment, error) {
	var r io.Reader
	switch codec {
	case CodecRaw:
		if want := uint64(unique)*32 + chunks*4; uint64(len(body)) != want {
			return nil, corruptf("raw manifest body is %d bytes, want %d for %d IDs and %d chunks", len(body), want, unique, chunks)
		}
		r = bytes.NewReader(body)
	case CodecZstd:
		zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(MaxChunkSize))
		if err != nil {
			return nil, corruptf("manifest body: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, corruptf("manifest body codec %d unknown (want 0 raw or 1 zstd)", uint8(codec))
	}
	// Preallocate what the body length proves (raw) or a bounded guess (zstd).
	hint := chunks
	if codec == CodecZstd {
		hint = min(hint, 1<<20)
	}
	g := &Segment{IDs: make([]ID, 0, min(uint64(unique), hint)), Refs: make([]uint32, 0, hint)}
	var buf [64 << 10]byte
	for left := int(unique); left > 0; {
		k := min(left, len(buf)/32)
		if _, err := io.ReadFull(r, buf[:k*32]); err != nil {
			return nil, corruptf("manifest body ends inside the ID table: %v", err)
		}
		for j := range k {
			g.IDs = append(g.IDs, ID(buf[j*32:j*32+32]))
		}
		left -= k
	}
	for left := int(chunks); left > 0; {
		k := min(left, len(buf)/4)
		if _, err := io.ReadFull(r, buf[:k*4]); err != nil {
			return nil, corruptf("manifest body ends inside the chunk refs: %v", err)
		}
		for j := range k {
			ref := binary.LittleEndian.Uint32(buf[j*4:])
			if ref > unique {
				return nil, corruptf("manifest chunk %d refers to ID %d of %d", len(g.Refs), ref, unique)
			}
			g.Refs = append(g.Refs, ref)
		}
		left -= k
	}
	if codec == CodecZstd {
		if k, err := r.Read(buf[:1]); k != 0 || err != io.EOF {
			return nil, corruptf("manifest body decodes to more bytes than its %d IDs and %d chunks", unique, chunks)
		}
	}
	return g, nil
}

// checkGeometry checks a manifest's chunk size, volume size and chunk
// count against each other and this volback's limits (both manifest
// formats carry them).
func checkGeometry(chunkSize uint32, size, chunks uint64) error {
	if err := CheckChunkSize(int(chunkSize)); err != nil {
		return corruptf("manifest: %v", err)
	}
	if size > 1<<62 {
		return corruptf("manifest volume size %d is absurd", size)
	}
	if want := uint64(chunkCount(int64(size), int(chunkSize))); chunks != want {
		return corruptf("manifest has %d chunks, but %d bytes at chunk size %d need %d", chunks, size, chunkSize, want)
	}
	if chunks > maxManifestChunks {
		return corruptf("manifest has %d chunks, more than the %d this volback accepts", chunks, uint64(maxManifestChunks))
	}
	return nil
}
