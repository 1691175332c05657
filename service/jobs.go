package service

import (
	"context"
	"errors"
	"sync"
	"time"
)

// The owner keeps a registry of its running backups and restores with
// their cancel functions, so that another process's backup-delete --force
// (through the socket) or backup-reset-state stops one within a second or
// two: the job sees its context cancelled with the cause, rolls back, and
// the canceller waits for it to have finished.
type jobs struct {
	mu sync.Mutex
	m  map[string]*job
}

type job struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// Job keys: a backup being created, a backup being restored.
func backupJob(id string) string  { return "backup/" + id }
func restoreJob(id string) string { return "restore/" + id }

// track registers a job under key; the returned context is cancelled by
// cancelJob, and end unregisters the job and tells its canceller.
func (s *Service) track(ctx context.Context, key string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	j := &job{cancel: cancel, done: make(chan struct{})}
	s.jobs.mu.Lock()
	if s.jobs.m == nil {
		s.jobs.m = map[string]*job{}
	}
	s.jobs.m[key] = j
	s.jobs.mu.Unlock()
	return ctx, func() {
		s.jobs.mu.Lock()
		if s.jobs.m[key] == j {
			delete(s.jobs.m, key)
		}
		s.jobs.mu.Unlock()
		cancel(nil)
		close(j.done)
	}
}

// errJobGone: no job of this process runs under the key.
var errJobGone = errors.New("no job of this process runs it")

// cancelJob cancels the job under key with cause and waits up to wait for
// it to end (its rollback included).
func (s *Service) cancelJob(key string, cause error, wait time.Duration) error {
	s.jobs.mu.Lock()
	j := s.jobs.m[key]
	s.jobs.mu.Unlock()
	if j == nil {
		return errJobGone
	}
	j.cancel(cause)
	select {
	case <-j.done:
		return nil
	case <-time.After(wait):
		return errors.New("it was asked to stop but had not finished after " + wait.String())
	}
}

// running reports whether a job runs under key.
func (s *Service) running(key string) bool {
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	return s.jobs.m[key] != nil
}

// cancelWait bounds how long a cancel waits for the job's rollback.
const cancelWait = time.Minute

// Causes of cancellation, kept as fail_reason.
var (
	errForceDeleted = errors.New("cancelled by backup-delete --force")
	errResetState   = errors.New("cancelled by backup-reset-state")
)
