package main

import (
	"os"
	"runtime/pprof"
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
}
