package service

import (
	"context"
	"sync/atomic"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
)

// Stats counts the data this process's backups and restores moved since
// it started, for metrics (package api exports them).
type Stats struct {
	BackupReadBytes   int64 // chunks read from volumes (holes are not read)
	BackupZeroBytes   int64 // of those, all-zero chunks: never stored
	BackupDedupBytes  int64 // of those, chunks the repository (or the backup) already held
	BackupNewBytes    int64 // of those, new chunks, before compression
	BackupStoredBytes int64 // what the new chunks took in packs (compressed)
	RestoreBytes      int64 // bytes written to volumes by restores
}

// stats are the counters behind Stats.
type stats struct {
	read, zero, dedup, newRaw, stored, restored atomic.Int64
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{BackupReadBytes: s.stats.read.Load(), BackupZeroBytes: s.stats.zero.Load(),
		BackupDedupBytes: s.stats.dedup.Load(), BackupNewBytes: s.stats.newRaw.Load(),
		BackupStoredBytes: s.stats.stored.Load(), RestoreBytes: s.stats.restored.Load()}
}

// RepositoryUsage is what one zone's repository holds.
type RepositoryUsage struct {
	Zone       string
	Repository string
	Objects    int64 // packs, manifests, records, config
	Bytes      int64
}

// RepositoryUsage lists every zone's repository's objects and their size.
// A repository that does not exist yet (no backup made there) is left
// out; one that cannot be listed is returned as an error alongside the
// others.
func (s *Service) RepositoryUsage(ctx context.Context) ([]RepositoryUsage, error) {
	var out []RepositoryUsage
	var firstErr error
	for _, zone := range s.cfg.ZoneNames() {
		url := s.cfg.Zones[zone].Repository
		be, err := repo.Open(ctx, url, false)
		if err != nil {
			continue // not created yet, or unreachable: service-list says which
		}
		if _, err := chunkstore.Open(ctx, be); err != nil {
			be.Close()
			continue
		}
		u := RepositoryUsage{Zone: zone, Repository: url}
		err = be.List(ctx, "", func(i repo.Info) error {
			u.Objects++
			u.Bytes += i.Size
			return nil
		})
		be.Close()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		out = append(out, u)
	}
	return out, firstErr
}
