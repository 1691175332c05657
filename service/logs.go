package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The owner logs one line per state change (a backup created, available,
// failed, deleted; a restore started and ended; snapshots, quotas,
// services) to <home>/log/volback.log with ids, project and duration.
// The file rotates by size: volback.log.1 is the previous one, up to
// logKeep old files.
const (
	logDirName = "log"
	logName    = "volback.log"
	logMax     = 10 << 20
	logKeep    = 3
)

// LogPath is the log file of the owner of home's catalog.
func LogPath(home string) string { return filepath.Join(home, logDirName, logName) }

// rotatingFile is an append-only file that starts anew past max bytes,
// keeping keep older ones (.1 newest).
type rotatingFile struct {
	mu   sync.Mutex
	path string
	max  int64
	keep int
	f    *os.File
	size int64
}

func openRotating(path string, max int64, keep int) (*rotatingFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	r := &rotatingFile{path: path, max: max, keep: keep}
	return r, r.open()
}

func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, st.Size()
	return nil
}

// Write appends p (one log line), rotating first when p would take the
// file past max.
func (r *rotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, os.ErrClosed
	}
	if r.size > 0 && r.size+int64(len(p)) > r.max {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

func (r *rotatingFile) rotate() error {
	r.f.Close()
	r.f = nil
	for i := r.keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", r.path, i), fmt.Sprintf("%s.%d", r.path, i+1))
	}
	if err := os.Rename(r.path, r.path+".1"); err != nil {
		return err
	}
	return r.open()
}

func (r *rotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// openEvents opens the owner's structured log: the file, and stderr too
// when cfg.LogStderr (serve).
func openEvents(cfg Config) (*slog.Logger, io.Closer, error) {
	f, err := openRotating(LogPath(cfg.Home), logMax, logKeep)
	if err != nil {
		return nil, nil, fmt.Errorf("log file %s: %w; check the volback home's permissions", LogPath(cfg.Home), err)
	}
	var w io.Writer = f
	if cfg.LogStderr {
		w = io.MultiWriter(f, os.Stderr)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})), f, nil
}

// event logs one state change with the calling identity; args are
// key-value pairs (ids, status, duration).
func (s *Service) event(ctx context.Context, msg string, args ...any) {
	if s.ev == nil {
		return
	}
	who := caller(ctx)
	if who.User != "" { // an HTTP API caller, known by its token's user
		args = append(args, "caller_user", who.User)
	} else {
		args = append(args, "caller_uid", who.UID)
	}
	s.ev.Info(msg, append(args, "caller_project", who.Project)...)
}

// since is a duration rounded for logs.
func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
