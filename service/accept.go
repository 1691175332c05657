package service

import "context"

// AcceptedFunc is told that a long job (a backup being created, a
// restore) was accepted: its first state is committed (the backup
// creating; the backup restoring and its volume restoring-backup) and
// the job can be cancelled (backup-delete --force, backup-reset-state).
// view is the job's *BackupView or *RestoreView. The job goes on when it
// returns, so a transport that answers at once (the Cinder API's 202)
// answers from it and may wait there for a worker of its own; the job
// sees its context cancelled if it is cancelled meanwhile.
type AcceptedFunc func(ctx context.Context, view any)

type acceptedKey struct{}

// WithAccepted asks the jobs started with ctx to report their acceptance
// to f.
func WithAccepted(ctx context.Context, f AcceptedFunc) context.Context {
	return context.WithValue(ctx, acceptedKey{}, f)
}

// Accepted reports a job's acceptance to the AcceptedFunc of ctx, if any:
// the service's long jobs call it (and a transport's tests, for jobs of
// their own).
func Accepted(ctx context.Context, view any) {
	if f, ok := ctx.Value(acceptedKey{}).(AcceptedFunc); ok {
		f(ctx, view)
	}
}
