package service

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/volback/volback/index"
)

// TestRelativeRefs: an incremental of a little-changed volume counts only
// the chunks it does not share with its parent; a child in error that
// still counts keeps its parent from being deleted (the refusal names it)
// until it goes; a backup whose base a broken catalog lost is reported by
// repo-check and counted in full by repo-repair.
func TestRelativeRefs(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img, data := manageImage(t, s, "v", 8<<20, 1)
	full := mustBackup(t, s, "v")
	scribble(t, img, data, 2, 2)
	incr, err := s.CreateBackup(ctx, BackupRequest{Volume: "v", Incremental: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fb, ib := mustIndexBackup(t, s, full.ID), mustIndexBackup(t, s, incr.ID)
	if ib.RefsBase != full.ID || ib.RefsApplied == 0 || ib.RefsApplied > 8 || !ib.FullyCounted() || fb.RefsBase != "" {
		t.Fatalf("incremental counts %d of %d chunks against %q, want a few against %s", ib.RefsApplied, ib.ObjectCount, ib.RefsBase, full.ID)
	}
	mustCheck(t, s)

	// The child in error still counts: the parent's delete is refused.
	if _, err := s.ResetBackupState(ctx, ResetStateRequest{Ref: incr.ID, State: index.StatusError}); err != nil {
		t.Fatal(err)
	}
	_, err = s.DeleteBackups(ctx, DeleteRequest{Refs: []string{full.ID}, Force: true})
	if err == nil || !strings.Contains(err.Error(), incr.ID) || !strings.Contains(err.Error(), "still counts its chunk references") {
		t.Fatalf("deleting the parent of a counting error child: %v, want a refusal naming %s", err, incr.ID)
	}
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{incr.ID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{full.ID}}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)

	// A catalog that lost a base: reported, then counted in full.
	p := mustBackup(t, s, "v")
	scribble(t, img, data, 2, 3)
	c, err := s.CreateBackup(ctx, BackupRequest{Volume: "v", Incremental: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.update(func(tx *index.Tx) error { return tx.DeleteBackup(p.ID) }); err != nil {
		t.Fatal(err)
	}
	reps, err := s.Check(ctx, CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(reps[0].Problems, "\n"), "counts its chunk references against backup "+p.ID) {
		t.Fatalf("repo-check of a backup without its base: %q", reps[0].Problems)
	}
	if _, err := s.Repair(ctx, RepairRequest{}); err != nil {
		t.Fatal(err)
	}
	if cb := mustIndexBackup(t, s, c.ID); cb.RefsBase != "" || cb.RefsApplied != cb.ObjectCount {
		t.Fatalf("after repo-repair the backup counts %d of %d against %q, want all in full", cb.RefsApplied, cb.ObjectCount, cb.RefsBase)
	}
	if _, err := s.GC(ctx, GCRequest{Grace: "0"}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, s)
	if got := restoreBytes(t, s, c.ID); !bytes.Equal(got, data) {
		t.Fatal("the repaired backup does not restore byte-exact")
	}
}
