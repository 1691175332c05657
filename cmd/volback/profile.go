package main

import (
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"time"
)

// VOLBACK_CPUPROFILE=FILE writes a CPU profile of the run (for `go tool pprof`).
var profile *os.File

func startProfile(path string) {
	f, err := os.Create(path)
	if err == nil && pprof.StartCPUProfile(f) == nil {
		profile = f
	}
}

func stopProfile() {
	if profile != nil {
		pprof.StopCPUProfile()
		profile.Close()
	}
	if tracing != nil {
		trace.Stop()
		tracing.Close()
	}
}

// VOLBACK_TRACE=FILE writes an execution trace of the run (for `go tool
// trace`, whose -pprof=sync and -pprof=syscall views show where a
// pipeline waits).
var tracing *os.File

func startTrace(path string) {
	f, err := os.Create(path)
	if err == nil && trace.Start(f) == nil {
		tracing = f
	}
}

// VOLBACK_MEMPROFILE=FILE writes a heap profile whenever the live heap
// reaches a new high (sampled ten times a second), so FILE shows what
// held memory at the run's peak.
func startMemProfile(path string) {
	runtime.MemProfileRate = 64 << 10
	go func() {
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		for range time.Tick(100 * time.Millisecond) {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak+1<<20 {
				peak = v
				if f, err := os.Create(path); err == nil {
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
		}
	}()
}
