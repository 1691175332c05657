package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// start runs volback in the background; the caller kills or waits for it.
func start(t *testing.T, home string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--home", home}, args...)...)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// killAfter SIGKILLs cmd after d, or returns false if it had finished.
func killAfter(cmd *exec.Cmd, d time.Duration) bool {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
		return false
	case <-time.After(d):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return true
	}
}

// repoCheck runs repo-check and fails the test on any problem.
func repoCheck(t *testing.T, home string) {
	t.Helper()
	if _, stderr, code := run(t, home, "repo-check", "--read-data"); code != 0 {
		t.Fatalf("repo-check after recovery: exit %d\n%s", code, stderr)
	}
}

// TestKillDuringBackup kills backup-create with SIGKILL at several points
// (reading, packing, committing) and checks the next command resolves the
// stuck state: no backup stays `creating`, none is `available` unless
// complete, references recount exactly, repo-gc removes the orphaned packs,
// and a new backup restores byte-identical.
func TestKillDuringBackup(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	img := filepath.Join(home, "vol.img")
	randomFile(t, img, 384<<20, 11)
	manage(t, home, "vol", img)
	backupCreate(t, home, "vol") // so later kills also hit dedup against existing chunks
	for _, delay := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond} {
		t.Run(fmt.Sprint(delay), func(t *testing.T) {
			writeRandom(t, img, 0, 200<<20, uint64(delay)) // new data: the backup must write packs
			cmd := start(t, home, "-q", "backup-create", "--name", "killed", "vol")
			if !killAfter(cmd, delay) {
				t.Logf("backup finished before %v; checking the finished state instead", delay)
			}
			var list []struct {
				ID, Name, Status string
				FailReason       *string `json:"fail_reason"`
			}
			runJSON(t, home, &list, "backup-list")
			for _, b := range list {
				switch {
				case b.Status == "creating":
					t.Fatalf("backup %s still creating after restart", b.ID)
				case b.Name == "killed" && b.Status == "error":
					if b.FailReason == nil || !strings.Contains(*b.FailReason, "interrupted") {
						t.Errorf("killed backup %s: fail_reason %v, want it to say interrupted", b.ID, b.FailReason)
					}
					mustRun(t, home, "backup-delete", b.ID)
				case b.Name == "killed" && b.Status != "available":
					t.Errorf("killed backup %s ended %s", b.ID, b.Status)
				}
			}
			if v := showVolume(t, home, "vol"); v.Status != "available" {
				t.Errorf("volume status %s after the killed backup, want available", v.Status)
			}
			repoCheck(t, home)
			mustRun(t, home, "repo-gc")
			repoCheck(t, home)
		})
	}
	b := backupCreate(t, home, "vol")
	r := restoreNew(t, home, b.ID, "after-kills")
	if sha256File(t, r.Path) != sha256File(t, img) {
		t.Fatal("backup after the kills does not restore byte-identical")
	}
	// repo-gc left no pack that the catalog does not use.
	var gc []map[string]any
	runJSON(t, home, &gc, "repo-gc")
	if n := gc[0]["orphan_packs_deleted"].(float64); n != 0 {
		t.Errorf("second repo-gc still found %v orphan packs", n)
	}
}

// TestKillDuringRestore: the restored-to volume ends error_restoring, the
// backup available again, and a second restore works.
func TestKillDuringRestore(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	img := filepath.Join(home, "vol.img")
	randomFile(t, img, 512<<20, 12)
	manage(t, home, "vol", img)
	b := backupCreate(t, home, "vol")
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
	cmd := start(t, home, "-q", "backup-restore", "--name", "half", b.ID)
	if !killAfter(cmd, 150*time.Millisecond) {
		t.Skip("restore finished before the kill")
	}
	var bb Backup
	runJSON(t, home, &bb, "backup-show", b.ID)
	if bb.Status != "available" {
		t.Errorf("backup status %s after a killed restore, want available", bb.Status)
	}
	var vols []Volume
	runJSON(t, home, &vols, "list")
	for _, v := range vols {
		if v.Name == "half" && v.Status != "error_restoring" {
			t.Errorf("half-restored volume is %s, want error_restoring", v.Status)
		}
	}
	r := restoreNew(t, home, b.ID, "whole")
	if sha256File(t, r.Path) != sha256File(t, img) {
		t.Fatal("restore after a killed restore differs")
	}
}

// TestOneOwner: while one process owns the catalog (serve), other
// invocations work through its socket instead of failing on the lock; a
// client's Ctrl-C cancels its backup in the owner.
func TestOneOwner(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(home, "vol.img")
	randomFile(t, img, 256<<20, 13)
	owner := start(t, home, "serve")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(socketPath(home)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not open its socket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	manage(t, home, "vol", img)
	b := backupCreate(t, home, "vol")
	var list []Backup
	runJSON(t, home, &list, "backup-list")
	if len(list) != 1 || list[0].ID != b.ID {
		t.Fatalf("backup-list through the owner: %+v", list)
	}

	writeRandom(t, img, 0, 256<<20, 14)
	client := start(t, home, "-q", "backup-create", "--name", "interrupted", "vol")
	time.Sleep(200 * time.Millisecond)
	client.Process.Signal(syscall.SIGINT)
	client.Wait()
	time.Sleep(500 * time.Millisecond)
	runJSON(t, home, &list, "backup-list")
	for _, x := range list {
		if x.Name == "interrupted" && x.Status != "error" && x.Status != "available" {
			t.Errorf("interrupted backup is %s, want error (cancelled) or available (finished first)", x.Status)
		}
	}
	repoCheck(t, home)
	owner.Process.Signal(syscall.SIGTERM)
	if err := owner.Wait(); err != nil {
		t.Errorf("serve did not exit cleanly on SIGTERM: %v", err)
	}
	if _, err := os.Stat(socketPath(home)); err == nil {
		t.Error("serve left its socket behind")
	}
}
