package service

import (
	"math"
	"os"
	"runtime/debug"
	"sync"

	"github.com/volback/volback/chunkstore"
)

// BaseMemoryLimit is the soft memory limit of a volback process at zstd
// level 1: what a backup, restore or catalog needs whatever the volume
// size (bench: peak RSS under 96 MiB), so the heap stays bounded. It was
// 64 MiB with three pack buffers for a backup; two (pipeline.Budget) hold
// 8 MiB less, and the limit came down by as much, so the GC has the same
// room (W1: peak RSS 91-96 MiB against 100-103, as fast, six runs each).
const BaseMemoryLimit = 56 << 20

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

// BackupMemory is what the soft memory limit grows by for each backup
// running beside another: most of its own 8 MiB pack buffer (its segments
// in flight and hashers' scratch are small; read blocks and the other pack
// buffers are shared, pipeline.Budget). Measured with four 1 GiB backups
// at once: 16 MiB let the owner reach 134 MiB of RSS, 8 MiB 110 MiB with
// 52-70 collections, and as fast.
const BackupMemory = 8 << 20

var running struct {
	sync.Mutex
	n int
}

// backupRunning raises the process's soft memory limit by BackupMemory
// for each backup beyond the first while it runs, so four backups at once
// do not drive the GC back to back at the one-backup limit (measured: 1737
// collections, 13% of the CPU, for four 1 GiB backups, 1.4x the time of
// four one after another). A limit the user
// set (GOMEMLIMIT), or none, is left alone. It returns the function that
// undoes it.
func backupRunning() (done func()) {
	adjust := func(delta int64) {
		if os.Getenv("GOMEMLIMIT") != "" {
			return
		}
		if cur := debug.SetMemoryLimit(-1); cur < math.MaxInt64/2 {
			debug.SetMemoryLimit(cur + delta)
		}
	}
	running.Lock()
	running.n++
	if running.n > 1 {
		adjust(BackupMemory)
	}
	running.Unlock()
	return func() {
		running.Lock()
		if running.n > 1 {
			adjust(-BackupMemory)
		}
		running.n--
		running.Unlock()
	}
}
