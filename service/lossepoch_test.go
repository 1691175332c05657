package service

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
)

// TestChunkLostWhileBackupRuns: a chunk found lost while a backup runs,
// after the backup looked it up or counted it, fails that backup instead
// of leaving it available and not marked damaged (backups are marked
// damaged only once they have a manifest). A loss of a chunk the backup
// does not need lets it through; the next backup stores the lost chunk
// again.
func TestChunkLostWhileBackupRuns(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	_, data := manageImage(t, s, "vol", 2<<20, 47)
	first := mustBackup(t, s, "vol")
	var repoID string
	if err := s.cat.View(func(tx *index.Tx) error {
		b, err := tx.Backup(first.ID)
		repoID = b.RepositoryID
		return err
	}); err != nil {
		t.Fatal(err)
	}
	markLost := func(id chunkstore.ID, c index.Chunk) {
		t.Helper()
		c.MarkLost()
		if err := s.update(func(tx *index.Tx) error { return tx.PutChunk(repoID, id, c) }); err != nil {
			t.Fatal(err)
		}
	}
	// liveChunk is the first referenced chunk that is not lost.
	liveChunk := func() (id chunkstore.ID, c index.Chunk) {
		t.Helper()
		err := s.cat.View(func(tx *index.Tx) error {
			return tx.Chunks(repoID, func(i chunkstore.ID, e index.Chunk) error {
				if e.Refs > 0 && !e.Lost() && id == (chunkstore.ID{}) {
					id, c = i, e
				}
				return nil
			})
		})
		if err != nil || id == (chunkstore.ID{}) {
			t.Fatalf("no chunk to lose: %v", err)
		}
		return id, c
	}
	defer func() { afterRefsHook = nil }()

	// A chunk nobody needs is lost meanwhile: the backup completes.
	var stranger chunkstore.ID
	rand.Read(stranger[:])
	afterRefsHook = func(*index.Backup) error {
		markLost(stranger, index.Chunk{Refs: 1})
		return nil
	}
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil); err != nil {
		t.Fatalf("a loss of a chunk the backup does not need failed it: %v", err)
	}
	if err := s.update(func(tx *index.Tx) error { return tx.DeleteChunk(repoID, stranger) }); err != nil {
		t.Fatal(err)
	}

	// A chunk the incremental shares with its parent is lost meanwhile.
	afterRefsHook = func(*index.Backup) error {
		markLost(liveChunk())
		return nil
	}
	_, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
	afterRefsHook = nil
	if err == nil || !strings.Contains(err.Error(), "found missing or corrupt while the backup ran") {
		t.Fatalf("backup that needs a chunk lost while it ran: %v; want a refusal that says so", err)
	}
	bs, err := s.ListBackups(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.Status != index.StatusAvailable && b.Status != index.StatusError {
			t.Fatalf("backup %s left %s", b.ID, b.Status)
		}
	}
	if bs[0].Status != index.StatusError {
		t.Fatalf("the newest backup is %s, want error", bs[0].Status)
	}

	// A chunk is found lost before a backup starts, and the backups that
	// need it are marked damaged only while it runs: its parent did not
	// look damaged, so it trusted the chunks it shares with it.
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil); err != nil {
		t.Fatal(err) // heals the first loss
	}
	id, c := liveChunk()
	markLost(id, c)
	r, err := s.repoFor(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	afterRefsHook = func(*index.Backup) error {
		return s.markDamaged(ctx, r, []chunkstore.ID{id}, "found corrupt by a test")
	}
	_, err = s.CreateBackup(ctx, BackupRequest{Volume: "vol", Incremental: true}, nil)
	afterRefsHook = nil
	if err == nil {
		t.Fatal("a backup that needs a chunk whose loss was recorded while it ran became available")
	}
	if bs, _ := s.ListBackups(ctx, "", false); bs[0].Status != index.StatusError {
		t.Fatalf("the newest backup is %s, want error", bs[0].Status)
	}

	// The next full backup stores the lost chunk anew.
	next, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, s, next.ID); !bytes.Equal(got, data) {
		t.Fatal("the backup after the loss restores other bytes")
	}
	mustCheck(t, s)
}
