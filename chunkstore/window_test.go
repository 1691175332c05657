package chunkstore

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestZstdWindowLimit: a blob whose zstd frame asks for a window larger
// than 4 MiB is refused as corrupt (docs/FORMAT.md), even when the chunk
// itself is small; one within the limit decodes.
func TestZstdWindowLimit(t *testing.T) {
	raw := make([]byte, 64<<10)
	for i := range raw {
		raw[i] = byte(i % 7)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(64<<10), zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	frame := enc.EncodeAll(raw, nil)
	if frame[4]&0x20 != 0 {
		t.Fatal("the encoder wrote a single-segment frame (no window descriptor)")
	}
	for _, tc := range []struct {
		windowLog int
		ok        bool
	}{{16, true}, {22, true}, {23, false}, {27, false}} {
		// Window_Descriptor: exponent (windowLog-10) in the high 5 bits,
		// mantissa 0. A larger window is valid for the data, only bigger.
		f := append([]byte(nil), frame...)
		f[5] = byte(tc.windowLog-10) << 3
		blob := binary.LittleEndian.AppendUint32([]byte{byte(CodecZstd)}, uint32(len(raw)))
		blob = append(blob, f...)
		_, _, err = DecodeBlob(blob, nil)
		if tc.ok && err != nil {
			t.Errorf("window 2^%d: %v", tc.windowLog, err)
		}
		if !tc.ok && !errors.Is(err, ErrCorrupt) {
			t.Errorf("window 2^%d: %v, want a refusal wrapping ErrCorrupt", tc.windowLog, err)
		}
	}
}
