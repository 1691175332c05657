package service

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volback/volback/index"
)

// TestRelativeRefs: an incremental of a little-changed volume counts only
// the chunks it does not share with its parent; a child in error that
// still counts keeps its parent from being deleted (the refusal names it)
// until it goes; a backup whose base a broken catalog lost is reported by
// repo-check and counted in full by repo-repair, which reports instead,
// naming the way out, when such a backup's manifest is unreadable too.
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

	// Its base lost and its manifest gone: nothing to recount from, so
	// repo-repair changes nothing and says how to go on.
	scribble(t, img, data, 2, 4)
	c2, err := s.CreateBackup(ctx, BackupRequest{Volume: "v", Incremental: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cb := mustIndexBackup(t, s, c2.ID); cb.RefsBase != c.ID {
		t.Fatalf("the second incremental counts against %q, want %s", cb.RefsBase, c.ID)
	}
	if err := s.update(func(tx *index.Tx) error { return tx.DeleteBackup(c.ID) }); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.cfg.Home, "repository", "manifests", c2.ID)); err != nil {
		t.Fatal(err)
	}
	reprs, err := s.Repair(ctx, RepairRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(reprs[0].Problems, "\n"); !strings.Contains(got, "counts against backup "+c.ID) || !strings.Contains(got, "backup-delete --force "+c2.ID) {
		t.Fatalf("repo-repair of a backup without its base and manifest reports %q, want a problem naming backup-delete --force %s", got, c2.ID)
	}
	if cb := mustIndexBackup(t, s, c2.ID); cb.RefsBase != c.ID {
		t.Fatalf("the refused repair changed the backup: it counts against %q", cb.RefsBase)
	}
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{c2.ID}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if reprs, err = s.Repair(ctx, RepairRequest{}); err != nil || len(reprs[0].Problems) != 0 {
		t.Fatalf("repo-repair after the forced delete: %v, %+v", err, reprs)
	}
	mustCheck(t, s)
}
