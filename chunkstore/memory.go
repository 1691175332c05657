package chunkstore

import (
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// EncoderMemory estimates the heap that the shared zstd encoders (see
// encoderFor) hold when compressing chunkSize-byte chunks at a zstd level:
// one block encoder per CPU, kept for the life of the process.
//
// Measured with klauspost/compress v1.20.4 on 2 CPUs, after a GC, with
// every block encoder in use: levels 1/3/7/19 hold 0.7/3.1/9.0/68.8 MiB at
// a 64 KiB window, and from level 6 on each encoder also keeps about one
// window of history (level 19: 70.7 MiB at 1 MiB, 76.7 MiB at 4 MiB).
func EncoderMemory(level, chunkSize int) int64 {
	if level <= 0 {
		return 0
	}
	window := int64(64 << 10)
	for window < int64(chunkSize) && window < MaxChunkSize {
		window *= 2
	}
	var perCPU int64
	switch zstd.EncoderLevelFromZstd(min(level, 22)) {
	case zstd.SpeedFastest:
		perCPU = 512 << 10
	case zstd.SpeedDefault:
		perCPU = 2 << 20
	case zstd.SpeedBetterCompression:
		perCPU = 5<<20 + window
	default: // SpeedBestCompression
		perCPU = 35<<20 + window
	}
	return perCPU * int64(runtime.GOMAXPROCS(0))
}
