package repo

import (
	"context"
	"time"
)

// Cleaner is implemented by drivers whose interrupted writes can leave
// storage behind that no listing shows (rados: the parts of a Put or
// Delete that crashed half way). GC calls it under the exclusive
// repository lock, when no other writer can be mid-Put; olderThan spares
// anything newer, as a second guard.
type Cleaner interface {
	// CleanUp finishes or undoes interrupted writes older than olderThan
	// and reports how many it settled.
	CleanUp(ctx context.Context, olderThan time.Duration) (settled int, err error)
}
