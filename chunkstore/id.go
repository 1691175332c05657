package chunkstore

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"
)

// ID is the BLAKE3-256 digest of a chunk's raw bytes (or a pack's bytes).
type ID [32]byte

// String is the lowercase hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the hex form.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("chunk/pack ID %q: want %d hex digits, got %d", s, 2*len(id), len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("chunk/pack ID %q: %v", s, err)
	}
	return id, nil
}

// Sum hashes b with BLAKE3-256.
func Sum(b []byte) ID { return blake3.Sum256(b) }

// zeroPage is compared against with bytes.Equal, which runs the runtime's
// vectorised memequal: much faster than any loop we could write in Go.
var zeroPage [64 << 10]byte

// IsZero reports whether every byte of b is zero.
func IsZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// Codec says how a blob's payload is encoded.
type Codec uint8

const (
	CodecRaw  Codec = 0
	CodecZstd Codec = 1
)

func (c Codec) String() string {
	switch c {
	case CodecRaw:
		return "raw"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// Location is where a chunk's blob lives.
type Location struct {
	Pack      ID
	Offset    uint32
	Length    uint32 // blob bytes, header included
	RawLength uint32
	Codec     Codec
}

// PackEntry is one trailer entry of a pack.
type PackEntry struct {
	ID ID
	Location
}

// Errors callers test with errors.Is.
var (
	ErrCorrupt = errors.New("repository data corrupt")
	ErrVersion = errors.New("unsupported repository format version")
)

// Chunk size limits (docs/FORMAT.md): a power of two in [MinChunkSize, MaxChunkSize].
const (
	MinChunkSize     = 16 << 10
	MaxChunkSize     = 4 << 20
	DefaultChunkSize = 64 << 10
)

// CheckChunkSize says why n is not a valid repository chunk size.
func CheckChunkSize(n int) error {
	if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("chunk size %d is invalid: it must be a power of two from 16K (16384) to 4M (4194304)", n)
	}
	return nil
}

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}
