package chunkstore

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

const (
	manifestMagic      = "VBMANIF1"
	manifestHeaderSize = 8 + 4 + 8 + 8 + 4 + 1 + 4
	manifestDigestSize = 32
	// maxManifestChunks refuses absurd chunk counts before anything is
	// allocated: 2^32 chunks is 64 TiB at the smallest chunk size.
	maxManifestChunks = 1 << 32
)

// Manifest maps chunk index -> chunk ID (docs/FORMAT.md).
type Manifest struct {
	ChunkSize int
	Size      int64
	IDs       []ID     // unique IDs in first-seen order
	Refs      []uint32 // per chunk: 0 = zero chunk, k = IDs[k-1]

	index map[ID]uint32 // ID -> ref, built by the first Set
}

// NewManifest makes an all-zero manifest for a volume of size bytes.
func NewManifest(size int64, chunkSize int) *Manifest {
	return &Manifest{
		ChunkSize: chunkSize,
		Size:      size,
		Refs:      make([]uint32, chunkCount(size, chunkSize)),
	}
}

func chunkCount(size int64, chunkSize int) int64 {
	return (size + int64(chunkSize) - 1) / int64(chunkSize)
}

// Set records that chunk i holds id and reports whether id is new to the
// manifest (a backup uses that to look each distinct chunk up once). Not
// safe for concurrent use.
func (m *Manifest) Set(i int, id ID) (added bool) {
	if m.index == nil {
		m.index = make(map[ID]uint32, len(m.IDs))
		for k, id := range m.IDs {
			if _, ok := m.index[id]; !ok {
				m.index[id] = uint32(k + 1)
			}
		}
	}
	ref, ok := m.index[id]
	if !ok {
		m.IDs = append(m.IDs, id)
		ref = uint32(len(m.IDs))
		m.index[id] = ref
	}
	m.Refs[i] = ref
	return !ok
}

// SetZero marks chunk i as an all-zero chunk (a hole).
func (m *Manifest) SetZero(i int) { m.Refs[i] = 0 }

// Chunk returns the ID of chunk i and false when it is a zero chunk.
func (m *Manifest) Chunk(i int) (ID, bool) {
	r := m.Refs[i]
	if r == 0 {
		return ID{}, false
	}
	return m.IDs[r-1], true
}

// Chunks is the number of chunks.
func (m *Manifest) Chunks() int { return len(m.Refs) }

// ChunkLen is the length of chunk i: ChunkSize except for a short last chunk.
func (m *Manifest) ChunkLen(i int) int {
	return int(min(int64(m.ChunkSize), m.Size-int64(i)*int64(m.ChunkSize)))
}

// Unique returns the distinct IDs the manifest references, each once, in
// order of first use. (IDs may also hold IDs no chunk refers to any more
// after Set replaced them; Encode drops those.)
func (m *Manifest) Unique() []ID {
	ids, _ := m.compact()
	return ids
}

// compact renumbers refs by first use, dropping unreferenced IDs, so that
// the encoding depends only on what each chunk holds.
func (m *Manifest) compact() ([]ID, []uint32) {
	remap := make([]uint32, len(m.IDs)+1)
	var ids []ID
	refs := make([]uint32, len(m.Refs))
	for i, r := range m.Refs {
		if r == 0 {
			continue
		}
		if remap[r] == 0 {
			ids = append(ids, m.IDs[r-1])
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

// Encode serialises the manifest and returns it with its digest. Refs must
// be within IDs (as Set and DecodeManifest guarantee).
func (m *Manifest) Encode() (data []byte, digest ID) {
	ids, refs := m.compact()
	body := make([]byte, 0, len(ids)*32+len(refs)*4)
	for _, id := range ids {
		body = append(body, id[:]...)
	}
	for _, r := range refs {
		body = binary.LittleEndian.AppendUint32(body, r)
	}
	codec := CodecRaw
	manifestEncOnce.Do(func() {
		manifestEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(MaxChunkSize))
	})
	if z := manifestEnc.EncodeAll(body, nil); len(z) < len(body) {
		body, codec = z, CodecZstd
	}
	data = make([]byte, 0, manifestHeaderSize+len(body)+manifestDigestSize)
	data = append(data, manifestMagic...)
	data = binary.LittleEndian.AppendUint32(data, uint32(m.ChunkSize))
	data = binary.LittleEndian.AppendUint64(data, uint64(m.Size))
	data = binary.LittleEndian.AppendUint64(data, uint64(len(refs)))
	data = binary.LittleEndian.AppendUint32(data, uint32(len(ids)))
	data = append(data, byte(codec))
	data = binary.LittleEndian.AppendUint32(data, uint32(len(body)))
	data = append(data, body...)
	digest = Sum(data)
	return append(data, digest[:]...), digest
}

// DecodeManifest parses and verifies an encoded manifest. Memory grows with
// the bytes actually decoded, never with a count taken on trust.
func DecodeManifest(b []byte) (*Manifest, ID, error) {
	if len(b) < manifestHeaderSize+manifestDigestSize {
		return nil, ID{}, corruptf("manifest is %d bytes, shorter than header and digest", len(b))
	}
	if string(b[:8]) != manifestMagic {
		return nil, ID{}, corruptf("manifest magic is %q, want %q", b[:8], manifestMagic)
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
	if err := CheckChunkSize(int(chunkSize)); err != nil {
		return nil, ID{}, corruptf("manifest: %v", err)
	}
	if size > 1<<62 {
		return nil, ID{}, corruptf("manifest volume size %d is absurd", size)
	}
	if want := uint64(chunkCount(int64(size), int(chunkSize))); chunks != want {
		return nil, ID{}, corruptf("manifest has %d chunks, but %d bytes at chunk size %d need %d", chunks, size, chunkSize, want)
	}
	if chunks > maxManifestChunks {
		return nil, ID{}, corruptf("manifest has %d chunks, more than the %d this volback accepts", chunks, uint64(maxManifestChunks))
	}
	if uint64(unique) > chunks {
		return nil, ID{}, corruptf("manifest lists %d unique IDs for %d chunks", unique, chunks)
	}
	if int(bodyLen) != n-manifestHeaderSize {
		return nil, ID{}, corruptf("manifest body length is %d, but %d bytes follow the header", bodyLen, n-manifestHeaderSize)
	}
	body := b[manifestHeaderSize:n]
	var r io.Reader
	switch codec {
	case CodecRaw:
		if want := uint64(unique)*32 + chunks*4; uint64(len(body)) != want {
			return nil, ID{}, corruptf("raw manifest body is %d bytes, want %d for %d IDs and %d chunks", len(body), want, unique, chunks)
		}
		r = bytes.NewReader(body)
	case CodecZstd:
		zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(MaxChunkSize))
		if err != nil {
			return nil, ID{}, corruptf("manifest body: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, ID{}, corruptf("manifest body codec %d unknown (want 0 raw or 1 zstd)", uint8(codec))
	}
	// Preallocate what the body length proves (raw) or a bounded guess (zstd).
	hint := chunks
	if codec == CodecZstd {
		hint = min(hint, 1<<20)
	}
	m := &Manifest{ChunkSize: int(chunkSize), Size: int64(size),
		IDs: make([]ID, 0, min(uint64(unique), hint)), Refs: make([]uint32, 0, hint)}
	var buf [64 << 10]byte
	// IDs, read in bounded pieces.
	for left := int(unique); left > 0; {
		k := min(left, len(buf)/32)
		if _, err := io.ReadFull(r, buf[:k*32]); err != nil {
			return nil, ID{}, corruptf("manifest body ends inside the ID table: %v", err)
		}
		for j := range k {
			m.IDs = append(m.IDs, ID(buf[j*32:j*32+32]))
		}
		left -= k
	}
	for left := int(chunks); left > 0; {
		k := min(left, len(buf)/4)
		if _, err := io.ReadFull(r, buf[:k*4]); err != nil {
			return nil, ID{}, corruptf("manifest body ends inside the chunk refs: %v", err)
		}
		for j := range k {
			ref := binary.LittleEndian.Uint32(buf[j*4:])
			if ref > unique {
				return nil, ID{}, corruptf("manifest chunk %d refers to ID %d of %d", len(m.Refs), ref, unique)
			}
			m.Refs = append(m.Refs, ref)
		}
		left -= k
	}
	if codec == CodecZstd {
		if k, err := r.Read(buf[:1]); k != 0 || err != io.EOF {
			return nil, ID{}, corruptf("manifest body decodes to more bytes than its %d IDs and %d chunks", unique, chunks)
		}
	}
	return m, digest, nil
}
