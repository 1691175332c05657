package chunkstore

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// blobHeaderSize is codec u8 | raw_length u32.
const blobHeaderSize = 5

// maxBlobSize bounds a stored blob: the writer stores raw when zstd is not
// smaller, so a blob is never larger than a raw max-size chunk.
const maxBlobSize = blobHeaderSize + MaxChunkSize

// Compression settings for writers: Level 0 = none, else zstd level 1..22
// mapped to klauspost's speed levels.
type Compression struct{ Level int }

// encoders are shared per klauspost level and window: EncodeAll is safe for
// concurrent use, and each encoder keeps one block encoder per CPU so
// workers don't serialise on it. The window is the chunk size rounded up to
// a power of two (at least 64 KiB): a chunk is compressed on its own, so a
// larger window gains nothing. Measured with 64 KiB chunks on 2 CPUs, the
// encoders of levels 1/3/7/19 hold about 0/3/9/69 MiB.
type encKey struct {
	level  zstd.EncoderLevel
	window int
}

var (
	encMu    sync.Mutex
	encoders = map[encKey]*zstd.Encoder{}
)

func encoderFor(level, size int) *zstd.Encoder {
	k := encKey{zstd.EncoderLevelFromZstd(min(level, 22)), 64 << 10}
	for k.window < size && k.window < MaxChunkSize {
		k.window *= 2
	}
	encMu.Lock()
	defer encMu.Unlock()
	e := encoders[k]
	if e == nil {
		var err error
		e, err = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(k.level),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithWindowSize(k.window),
			zstd.WithLowerEncoderMem(true),
			zstd.WithEncoderCRC(false)) // the BLAKE3 of the chunk already covers it
		if err != nil {
			panic(fmt.Sprintf("chunkstore: zstd encoder: %v", err)) // options are constant
		}
		encoders[k] = e
	}
	return e
}

// decoder is shared; DecodeAll is safe for concurrent use. Its memory is
// bounded to the largest chunk, and DecodeAll never grows past cap(dst).
var decoder = func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithDecoderMaxMemory(MaxChunkSize),
		zstd.WithDecoderMaxWindow(MaxChunkSize),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		panic(fmt.Sprintf("chunkstore: zstd decoder: %v", err))
	}
	return d
}()

// EncodeBlob appends the blob for raw to dst: zstd when the level asks for it
// and the result is smaller, raw otherwise.
func EncodeBlob(dst, raw []byte, comp Compression) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(append(dst, byte(CodecRaw)), uint32(len(raw)))
	if comp.Level > 0 && len(raw) > 0 {
		dst = encoderFor(comp.Level, len(raw)).EncodeAll(raw, dst)
		if len(dst)-start-blobHeaderSize < len(raw) {
			dst[start] = byte(CodecZstd)
			return dst
		}
		dst = dst[:start+blobHeaderSize]
	}
	return append(dst, raw...)
}

// DecodeBlob decodes a blob into dst (reused when its capacity is large
// enough) and returns the raw bytes and the codec. It checks the codec and
// lengths but not the hash (see Store.ReadChunk).
func DecodeBlob(blob, dst []byte) ([]byte, Codec, error) {
	if len(blob) < blobHeaderSize {
		return nil, 0, corruptf("blob of %d bytes is shorter than its %d-byte header", len(blob), blobHeaderSize)
	}
	codec := Codec(blob[0])
	rawLen := binary.LittleEndian.Uint32(blob[1:])
	payload := blob[blobHeaderSize:]
	if rawLen > MaxChunkSize {
		return nil, codec, corruptf("blob raw length %d exceeds the maximum chunk size %d", rawLen, MaxChunkSize)
	}
	if cap(dst) < int(rawLen) {
		dst = make([]byte, 0, rawLen)
	}
	switch codec {
	case CodecRaw:
		if len(payload) != int(rawLen) {
			return nil, codec, corruptf("raw blob payload is %d bytes, header says %d", len(payload), rawLen)
		}
		return append(dst[:0], payload...), codec, nil
	case CodecZstd:
		out, err := decoder.DecodeAll(payload, dst[:0:rawLen])
		if err != nil {
			return nil, codec, corruptf("zstd blob (raw length %d): %v", rawLen, err)
		}
		if len(out) != int(rawLen) {
			return nil, codec, corruptf("zstd blob decodes to %d bytes, header says %d", len(out), rawLen)
		}
		return out, codec, nil
	}
	return nil, codec, corruptf("blob has unknown codec %d (this volback knows 0 raw and 1 zstd; a newer volback may have written it)", uint8(codec))
}
