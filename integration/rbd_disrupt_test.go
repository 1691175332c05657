package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volback/volback/integration/ceph"
)

// TestRBDOSDStoppedMidBackup: the cluster's only OSD stops (SIGSTOP) while
// a backup of an RBD image into a RADOS repository is reading: the backup
// fails within the locators' timeout with an error that says the cluster
// did not answer, ends `error`, the volume is available again, the
// earlier backup still restores, and after the OSD resumes the next backup
// works. (SIGKILL is not used: the test cluster's memstore OSD would lose
// every object with its memory.)
func TestRBDOSDStoppedMidBackup(t *testing.T) {
	c := cephFor(t, ceph.Disrupt(t))
	home := newHome(t)
	writeConf(t, home, fmt.Sprintf("[zones.nova]\nrepository = %q\nvolumes = \"rbd://%s?%s\"\n",
		c.radosRepo("stop", "timeout", "5s"), c.RBDPool, c.query("timeout", "5s")))
	c.cleanupVolumes(home)
	const size = 384 * mib
	image := c.newImage(c.RBDPool, "src", size)
	c.patch(c.RBDPool, image, piece{off: 0, data: randomBytes(20, 8*mib)})
	manage(t, home, "src", c.locator(c.RBDPool, image, "timeout", "5s"))
	before := backupArgs(t, home, "src")
	beforeExport := c.export(c.RBDPool + "/" + image)
	c.patch(c.RBDPool, image, piece{off: 0, data: randomBytes(21, size)})

	osd := c.OSDPid(t)
	var once sync.Once
	// Resuming makes the cluster serve again before the test goes on (the
	// tests after this one share it): a single OSD woken from SIGSTOP can
	// keep its placement groups "waiting for readable" (their read leases
	// lapsed while it slept and nobody renews them: seen here for over ten
	// minutes), so it is marked down, which makes it rejoin and re-peer,
	// and the test waits until reads and writes in both pools answer.
	resume := func() {
		once.Do(func() {
			syscall.Kill(osd, syscall.SIGCONT)
			if out, err := exec.Command("timeout", append([]string{"30", "ceph"}, c.args("osd", "down", "0")...)...).CombinedOutput(); err != nil {
				t.Logf("ceph osd down 0: %v: %s", err, out)
			}
			c.waitActive()
		})
	}
	t.Cleanup(resume)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--home", home, "backup-create", "src")
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Stop the OSD once the backup is claimed and reading.
	deadline := time.Now().Add(time.Minute)
	for {
		var bs []Backup
		out, _, code := run(t, home, "-f", "json", "backup-list")
		if code == 0 && jsonUnmarshal(out, &bs) == nil && len(bs) == 2 && bs[0].Status == "creating" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backup was not seen creating within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(osd, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	err := cmd.Wait()
	took := time.Since(stopped)
	resume()
	msg := strings.TrimSpace(stderr.String())
	t.Logf("backup-create with the OSD stopped: %v after %v: %s", err, took.Round(time.Millisecond), msg)
	if err == nil {
		t.Fatal("backup-create succeeded with the OSD stopped mid-backup")
	}
	if took > 90*time.Second {
		t.Errorf("backup-create took %v to fail with timeout=5s", took)
	}
	for _, w := range []string{"did not answer within 5s", "ceph -s"} {
		if !strings.Contains(msg, w) {
			t.Errorf("the failure %q does not say %q", msg, w)
		}
	}

	var bs []Backup
	runJSON(t, home, &bs, "backup-list")
	var failed *Backup
	for i := range bs {
		if bs[i].ID != before.ID {
			failed = &bs[i]
		}
	}
	if failed == nil || failed.Status != "error" || failed.FailReason == "" {
		t.Fatalf("after the failed backup, backup-list = %+v; want it in status error with a reason", bs)
	}
	if v := showVolume(t, home, "src"); v.Status != "available" {
		t.Errorf("volume after the failed backup is %s, want available", v.Status)
	}
	c.sameAsExport("the backup made before the OSD stopped", restoreTo(t, home, before.ID, "before", "").Path, beforeExport)

	after := backupArgs(t, home, "--incremental", "src")
	afterExport := c.export(c.RBDPool + "/" + image)
	c.sameAsExport("the first backup after the OSD resumed", restoreTo(t, home, after.ID, "after", "").Path, afterExport)
	mustRun(t, home, "repo-check", "--read-data")
	for _, s := range c.snapshots(c.RBDPool, image) {
		if s == "volback."+failed.ID {
			t.Errorf("the failed backup's snapshot %s is still on the image", s)
		}
	}
}

// waitActive waits, up to 3 minutes, until the cluster serves I/O again:
// three writes, removals and listings in each pool in a row, one second
// apart, each within 8 s. (`ceph status` is not enough: right
// after SIGCONT the monitor still shows the OSD up and its placement
// groups active while the OSD and its clients reconnect.)
func (c *cephTest) waitActive() {
	c.t.Helper()
	start := time.Now()
	probe := func(pool string) error {
		name := "volback-probe-" + c.id
		put := exec.Command("timeout", append([]string{"8", "rados"}, c.args("-p", pool, "put", name, "/etc/hostname")...)...)
		if out, err := put.CombinedOutput(); err != nil {
			return fmt.Errorf("rados put in %s: %v: %s", pool, err, strings.TrimSpace(string(out)))
		}
		rm := exec.Command("timeout", append([]string{"8", "rados"}, c.args("-p", pool, "rm", name)...)...)
		if out, err := rm.CombinedOutput(); err != nil {
			return fmt.Errorf("rados rm in %s: %v: %s", pool, err, strings.TrimSpace(string(out)))
		}
		// A listing reads every placement group of the pool, so one still
		// waiting for readable shows here.
		ls := exec.Command("timeout", append([]string{"8", "rados"}, c.args("-p", pool, "ls", "--all")...)...)
		if out, err := ls.CombinedOutput(); err != nil {
			return fmt.Errorf("rados ls in %s: %v: %s", pool, err, lastLine(string(out)))
		}
		return nil
	}
	var last error
	for ok := 0; time.Since(start) < 3*time.Minute; time.Sleep(time.Second) {
		if last = errors.Join(probe(c.Pool), probe(c.RBDPool)); last != nil {
			ok = 0
			continue
		}
		if ok++; ok == 3 {
			c.t.Logf("cluster serving again %v after the OSD resumed", time.Since(start).Round(time.Millisecond))
			return
		}
	}
	c.t.Errorf("the cluster did not serve I/O again within 3 minutes of resuming the OSD: %v", last)
}

// TestRBDTwoHomesShareRADOS: two volback homes (two hosts) keep their
// backups in one RADOS repository: they back up at the same time, one
// deletes its backups and collects garbage (under the repository's lock,
// keeping the other home's chunks) while the other backs up, and every
// backup either made still restores byte for byte.
func TestRBDTwoHomesShareRADOS(t *testing.T) {
	c := useCeph(t)
	repoURL := c.radosRepo("shared")
	homes := []string{newHome(t), newHome(t)}
	type made struct{ home, backup, export string }
	var mu sync.Mutex
	var all []made
	images := make([]string, 2)
	for i, h := range homes {
		writeConf(t, h, fmt.Sprintf("[zones.nova]\nrepository = %q\nvolumes = \"rbd://%s?%s\"\n", repoURL, c.RBDPool, c.query()))
		c.cleanupVolumes(h)
		images[i] = c.newImage(c.RBDPool, fmt.Sprintf("h%d", i), 24*mib)
		c.patch(c.RBDPool, images[i], piece{off: 0, data: randomBytes(uint64(30+i), 16*mib)})
		manage(t, h, "vol", c.locator(c.RBDPool, images[i]))
	}
	// backupBoth backs up both homes' volumes at once (each after args'
	// changes to its image) and records what each backup must restore to.
	backupBoth := func(round int, args ...string) {
		var wg sync.WaitGroup
		for i, h := range homes {
			c.patch(c.RBDPool, images[i], piece{off: int64(round) * 3 * mib, data: randomBytes(uint64(40+10*round+i), 2*mib)})
			export := c.export(c.RBDPool + "/" + images[i])
			wg.Go(func() {
				var b Backup
				out, stderr, code := run(t, h, append([]string{"-f", "json", "backup-create"}, append(args, "vol")...)...)
				if code != 0 || jsonUnmarshal(out, &b) != nil || b.Status != "available" {
					t.Errorf("home %d round %d: backup-create: exit %d %s", i, round, code, stderr)
					return
				}
				mu.Lock()
				all = append(all, made{h, b.ID, export})
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	backupBoth(0)
	backupBoth(1, "--incremental")
	if t.Failed() {
		t.FailNow()
	}

	// Home 0 deletes its latest incremental and collects garbage, repacking
	// every pack with anything dead, while home 1 backs up.
	c.patch(c.RBDPool, images[1], piece{off: 20 * mib, data: randomBytes(50, mib)})
	export1 := c.export(c.RBDPool + "/" + images[1])
	done := make(chan Backup, 1)
	go func() {
		var b Backup
		out, stderr, code := run(t, homes[1], "-f", "json", "backup-create", "--incremental", "vol")
		if code != 0 || jsonUnmarshal(out, &b) != nil {
			t.Errorf("home 1: backup-create during home 0's delete and GC: exit %d %s", code, stderr)
		}
		done <- b
	}()
	var deleted string
	for _, m := range all {
		if m.home == homes[0] {
			deleted = m.backup // the later one: the incremental
		}
	}
	mustRun(t, homes[0], "backup-delete", deleted)
	// --grace 0: only the repository lock keeps home 1's packs in flight safe.
	var gc []map[string]any
	runJSON(t, homes[0], &gc, "repo-gc", "--grace", "0", "--repack-below", "1")
	t.Logf("repo-gc of home 0 while home 1 backs up: %v", gc)
	if b := <-done; b.ID != "" {
		all = append(all, made{homes[1], b.ID, export1})
	}

	// A new backup in home 0 after the GC, then every backup still there
	// restores.
	backupBoth(2)
	for i, m := range all {
		if m.backup == deleted {
			continue
		}
		v := restoreTo(t, m.home, m.backup, fmt.Sprintf("r%d", i), "")
		c.sameAsExport(fmt.Sprintf("backup %s of home %s", m.backup, m.home), v.Path, m.export)
		mustRun(t, m.home, "delete", v.ID)
	}
	for _, h := range homes {
		mustRun(t, h, "repo-check", "--read-data")
	}
}

// lastLine is the last non-empty line of out (a listing's error follows
// whatever it listed).
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}
