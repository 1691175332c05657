// Package failpoint lets crash tests kill volback at named points in its
// work, as a power cut or kill -9 would. It is inert unless
// VOLBACK_FAILPOINT is set:
//
//	VOLBACK_FAILPOINT=gc.pack-deleted:2   SIGKILL at the second pack deletion
//	VOLBACK_FAILPOINT_LOG=/tmp/points     append each point reached, one a line
//
// The log lets a test learn which points a command reaches, and how often,
// before it picks one by seed.
package failpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

var (
	point string
	at    int64
	hits  atomic.Int64

	logMu   sync.Mutex
	logFile *os.File
)

func init() {
	if v := os.Getenv("VOLBACK_FAILPOINT"); v != "" {
		name, n, _ := strings.Cut(v, ":")
		point, at = name, 1
		if k, err := strconv.ParseInt(n, 10, 64); err == nil && k > 0 {
			at = k
		}
	}
	if p := os.Getenv("VOLBACK_FAILPOINT_LOG"); p != "" {
		logFile, _ = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	}
}

// Hit marks that the process reached point name.
func Hit(name string) {
	if logFile != nil {
		logMu.Lock()
		logFile.WriteString(name + "\n")
		logMu.Unlock()
	}
	if point != name {
		return
	}
	if hits.Add(1) == at {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; never go on
	}
}
