package service

import "github.com/volback/volback/chunkstore"

// BaseMemoryLimit is the soft memory limit of a volback process at zstd
// level 1: what a backup, restore or catalog needs whatever the volume
// size (bench: peak RSS under 96 MiB), so the heap stays bounded.
const BaseMemoryLimit = 64 << 20

// MemoryLimit is the soft memory limit for a process with this
// configuration: the base plus what the zstd encoders of its
// compression_level keep (about 35 MiB per CPU from level 10 on). A fixed
// 64 MiB limit at level 19 sat below the encoders' own live heap, and the
// Go GC ran back to back (146 collections for a 128 MiB backup, against 4).
// It uses chunk_size from the configuration; a repository made with larger
// chunks costs about one chunk more per CPU at levels 6 and up.
func (c Config) MemoryLimit() int64 {
	return BaseMemoryLimit + chunkstore.EncoderMemory(c.CompressionLevel, c.ChunkSize)
}
