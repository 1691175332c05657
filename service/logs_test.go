package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRotatingFile: past max bytes the file starts anew, keeping keep
// older files, newest .1; nothing is lost within them.
func TestRotatingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log", "x.log")
	r, err := openRotating(path, 100, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("a", 39) + "\n" // 40 bytes: two lines a file
	for i := range 7 {
		if _, err := r.Write([]byte(string(rune('0'+i)) + line[1:])); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	want := map[string]string{path: "6", path + ".1": "45", path + ".2": "23"}
	for p, firsts := range want {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			got += l[:1]
		}
		if got != firsts {
			t.Errorf("%s holds lines %q, want %q", filepath.Base(p), got, firsts)
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("a third old file was kept: %v", err)
	}
}

// TestStateChangesLogged: a backup's life is in the log file, one line
// per state change with ids, project and duration.
func TestStateChangesLogged(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	manageImage(t, s, "a", 1<<20, 1)
	b := mustBackup(t, s, "a")
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.ID}}); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(LogPath(s.cfg.Home))
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{`msg="backup creating"`, `msg="backup available"`, `msg="backup deleted"`} {
		found := false
		for _, l := range strings.Split(string(log), "\n") {
			if strings.Contains(l, msg) && strings.Contains(l, "backup="+b.ID) && strings.Contains(l, "project=admin") {
				found = true
				if msg == `msg="backup available"` && !strings.Contains(l, "duration=") {
					t.Errorf("no duration in %q", l)
				}
			}
		}
		if !found {
			t.Errorf("no %s line for backup %s in:\n%s", msg, b.ID, log)
		}
	}
}
