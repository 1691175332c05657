package integration

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Issue 9's lifecycle through the real binary: projects through the
// socket as another uid, quotas under concurrent processes, cancel of a
// backup and of a restore from another process, in-use volumes backed up
// through snapshots while a writer writes, service-list with an
// unreachable repository, and concurrent backups with a mount.

// stateAll is every project's volumes and backups (for refusals).
func stateAll(t *testing.T, home string) string {
	t.Helper()
	return mustRun(t, home, "-f", "json", "list", "--all-projects") + "\n" +
		mustRun(t, home, "-f", "json", "backup-list", "--all-projects")
}

// TestProjectsThroughSocketAsOtherUID: uid 65534, a member of project demo
// by volback.toml's [users], calls root's serve through the socket. It
// sees only demo's volumes and backups, another project's ids are "not
// found", admin-only verbs are refused, and nothing changes.
func TestProjectsThroughSocketAsOtherUID(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	conf := "[users]\n\"65534\" = { project = \"demo\", role = \"member\" }\n"
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	randomFile(t, filepath.Join(home, "a.img"), 4*mib, 1)
	randomFile(t, filepath.Join(home, "d.img"), 4*mib, 2)
	admins := manage(t, home, "a", filepath.Join(home, "a.img"))
	adminBackup := backupCreate(t, home, "a")
	var demoVol Volume
	runJSON(t, home, &demoVol, "--project", "demo", "manage", "--name", "d", filepath.Join(home, "d.img"))
	if demoVol.ProjectID != "demo" {
		t.Fatalf("volume managed for demo belongs to %q", demoVol.ProjectID)
	}
	startServe(t, home)
	vb := executableByAll(t, bin)
	member := func(args ...string) volbackResult {
		r := runBin(vb, home, asNobody(false), args...)
		t.Logf("as uid 65534: volback %s -> %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		return r
	}
	r := member("-f", "json", "list")
	var vols []Volume
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &vols) != nil || len(vols) != 1 || vols[0].ID != demoVol.ID {
		t.Fatalf("member's list: exit %d, %q; want only volume d", r.code, r.stdout)
	}
	r = member("-f", "json", "backup-create", "--name", "mine", "d")
	var mine Backup
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &mine) != nil || mine.Status != "available" {
		t.Fatalf("member's backup-create: exit %d %s", r.code, r.stderr)
	}
	before := stateAll(t, home)
	for _, c := range []struct {
		args  []string
		words []string
	}{
		{[]string{"show", admins.ID}, []string{"not found"}},
		{[]string{"show", "a"}, []string{"not found"}},
		{[]string{"backup-show", adminBackup.ID}, []string{"not found"}},
		{[]string{"backup-delete", adminBackup.ID}, []string{"not found"}},
		{[]string{"backup-restore", adminBackup.ID}, []string{"not found"}},
		{[]string{"backup-create", admins.ID}, []string{"not found"}},
		{[]string{"repo-gc"}, []string{"Policy doesn't allow backup:repo-gc"}},
		{[]string{"backup-delete", "--force", mine.ID}, []string{"Policy doesn't allow backup:force_delete"}},
		{[]string{"backup-reset-state", "--state", "error", mine.ID}, []string{"Policy doesn't allow"}},
		{[]string{"quota-update", "--backups", "50", "demo"}, []string{"Policy doesn't allow"}},
		{[]string{"manage", "--name", "x", filepath.Join(home, "a.img")}, []string{"Policy doesn't allow"}},
		{[]string{"service-disable", "nova"}, []string{"Policy doesn't allow"}},
		{[]string{"--project", "admin", "list"}, []string{"cannot act for project admin"}},
		{[]string{"quota-usage", "admin"}, []string{"Policy doesn't allow"}},
	} {
		r := member(c.args...)
		assertRefused(t, "member: "+strings.Join(c.args, " "), r.stderr, r.code, c.words...)
	}
	if after := stateAll(t, home); after != before {
		t.Errorf("refused calls changed the catalog:\nbefore %s\nafter  %s", before, after)
	}
	var usage []struct {
		Type  string `json:"type"`
		InUse int64  `json:"in_use"`
		Limit int64  `json:"limit"`
	}
	r = member("-f", "json", "quota-usage")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &usage) != nil || usage[0].InUse != 1 || usage[0].Limit != 10 {
		t.Errorf("member's quota-usage: %s", r.stdout)
	}
	var all []Backup
	runJSON(t, home, &all, "backup-list", "--all-projects")
	if len(all) != 2 {
		t.Errorf("admin's backup-list --all-projects shows %d backups, want 2", len(all))
	}
	var adminOnly []Backup
	runJSON(t, home, &adminOnly, "backup-list")
	if len(adminOnly) != 1 || adminOnly[0].ID != adminBackup.ID {
		t.Errorf("admin's backup-list shows %+v, want only project admin's", adminOnly)
	}
	// An unlisted uid is refused by the owner.
	other := runBin(vb, home, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65533, Gid: 65533}}, "list")
	assertRefused(t, "uid 65533 without an entry", other.stderr, other.code, "refuses calls from uid 65533", "[users]")
}

// TestQuotaConcurrentProcesses: four backup-create processes at once with
// room for two: two succeed, two are refused with Cinder's words, and
// quota-usage counts exactly two.
func TestQuotaConcurrentProcesses(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	for i := range 4 {
		img := filepath.Join(home, fmt.Sprintf("v%d.img", i))
		randomFile(t, img, 32*mib, uint64(i))
		manage(t, home, fmt.Sprintf("v%d", i), img)
	}
	mustRun(t, home, "quota-update", "--backups", "2", "admin")
	var wg sync.WaitGroup
	res := make([]volbackResult, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = runAs(home, nil, "backup-create", fmt.Sprintf("v%d", i))
		}()
	}
	wg.Wait()
	ok := 0
	for i, r := range res {
		switch {
		case r.code == 0:
			ok++
		default:
			assertRefused(t, fmt.Sprintf("backup-create v%d", i), r.stderr, r.code, "Maximum number of backups allowed (2) exceeded")
		}
	}
	if ok != 2 {
		t.Errorf("%d of 4 concurrent backups ran with a quota of 2", ok)
	}
	var usage []struct {
		Type     string `json:"type"`
		InUse    int64  `json:"in_use"`
		Reserved int64  `json:"reserved"`
		Limit    int64  `json:"limit"`
	}
	runJSON(t, home, &usage, "quota-usage")
	if usage[0].InUse != 2 || usage[0].Reserved != 0 || usage[0].Limit != 2 || usage[1].InUse != 2 {
		t.Errorf("quota-usage %+v; want 2 backups and 2 GiB in use, none reserved", usage)
	}
	before := stateAll(t, home)
	_, stderr, code := run(t, home, "backup-create", "v0")
	assertRefused(t, "a third backup", stderr, code, "Maximum number of backups allowed (2) exceeded")
	if stateAll(t, home) != before {
		t.Error("the refused backup changed the catalog")
	}
}

// packFiles lists the pack objects of a file:// repository.
func packFiles(t *testing.T, repo string) []string {
	t.Helper()
	var out []string
	for _, f := range filesUnder(t, filepath.Join(repo, "packs")) {
		if !strings.Contains(filepath.Base(f), ".tmp") {
			out = append(out, f)
		}
	}
	return out
}

// waitStatus polls backup-list until backup name has status, returning its id.
func waitStatus(t *testing.T, home, name, status string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var list []Backup
		runJSON(t, home, &list, "backup-list", "--all-projects")
		for _, b := range list {
			if b.Name == name && b.Status == status {
				return b.ID
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("backup %s not %s within 60s", name, status)
	return ""
}

// TestCancelBackup4GiB: backup-delete --force from another process stops
// the backup of a 4 GiB volume mid-way within seconds; the record is
// gone, references recount exactly, the volume is available again, and
// after repo-gc the repository holds no pack (no backup needs any).
func TestCancelBackup4GiB(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	img := filepath.Join(home, "big.img")
	randomFile(t, img, 4*gib, 7)
	manage(t, home, "big", img)
	startServe(t, home)
	cmd, stderr := startCapture(t, home, "-q", "backup-create", "--name", "big1", "big")
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	id := waitStatus(t, home, "big1", "creating")
	eventually(t, "packs written", func() bool { return len(packFiles(t, repoDir(home))) >= 3 }) // mid-way, far from done
	start := time.Now()
	mustRun(t, home, "backup-delete", "--force", id)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("backup-create still running 5s after the force delete")
	}
	took := time.Since(start)
	t.Logf("cancel to exit: %v", took)
	if took > 3*time.Second {
		t.Errorf("the cancel took %v; want a second or two", took)
	}
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(stderr.String(), "cancelled by backup-delete --force") {
		t.Errorf("backup-create: exit %d, stderr %q; want a failure saying it was cancelled", cmd.ProcessState.ExitCode(), stderr.String())
	}
	var list []Backup
	runJSON(t, home, &list, "backup-list", "--all-projects")
	if len(list) != 0 {
		t.Errorf("backups left after the cancel: %+v", list)
	}
	if v := showVolume(t, home, "big"); v.Status != "available" {
		t.Errorf("volume %s after the cancel, want available", v.Status)
	}
	repoCheck(t, home) // references recount exactly
	mustRun(t, home, "repo-gc")
	if p := packFiles(t, repoDir(home)); len(p) != 0 {
		t.Errorf("%d packs left after repo-gc, and no backup needs any", len(p))
	}
	repoCheck(t, home)
}

// TestCancelRestore: backup-reset-state from another process stops a
// restore; the volume is available and marked incomplete, the backup
// available, and a new restore makes the volume whole.
func TestCancelRestore(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte("workers = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(home, "src.img")
	randomFile(t, img, 2*gib, 8)
	manage(t, home, "src", img)
	b := backupCreate(t, home, "src")
	dst := filepath.Join(home, "dst.img")
	makeSparse(t, dst, 2*gib)
	manage(t, home, "dst", dst)
	startServe(t, home)
	cmd, stderr := startCapture(t, home, "-q", "backup-restore", "--volume", "dst", b.ID)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	eventually(t, "restore running", func() bool { return showVolume(t, home, "dst").Status == "restoring-backup" })
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	mustRun(t, home, "backup-reset-state", "--state", "available", b.ID)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("backup-restore still running 5s after reset-state")
	}
	t.Logf("reset-state to restore exit: %v", time.Since(start))
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(stderr.String(), "cancelled") {
		t.Errorf("backup-restore: exit %d, %q; want it cancelled", cmd.ProcessState.ExitCode(), stderr.String())
	}
	var v map[string]any
	runJSON(t, home, &v, "show", "dst")
	if v["status"] != "available" || v["incomplete_content"] == nil {
		t.Errorf("volume after the cancelled restore: status %v, incomplete_content %v", v["status"], v["incomplete_content"])
	}
	var got Backup
	runJSON(t, home, &got, "backup-show", b.ID)
	if got.Status != "available" {
		t.Errorf("backup is %s after reset-state", got.Status)
	}
	mustRun(t, home, "backup-restore", "--volume", "dst", b.ID)
	compareFiles(t, img, dst, 2*gib)
	runJSON(t, home, &v, "show", "dst")
	if v["incomplete_content"] != nil {
		t.Errorf("a whole restore left incomplete_content %v", v["incomplete_content"])
	}
}

// The writer: a process that holds an OFD write lock on an image (as QEMU
// does) and keeps rewriting it in 4 KiB blocks, each stamped with its
// pass number and index, from the first block to the last, pass after
// pass. An image read at one moment therefore shows pass g on a prefix
// of the blocks and pass g-1 on the rest; a live read across passes
// shows anything.
const (
	writerEnv   = "VOLBACK_TEST_WRITER"
	writerBlock = 4096
)

func runWriter(path string) int {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		return 1
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		fmt.Fprintln(os.Stderr, "writer: lock:", err)
		return 1
	}
	st, _ := f.Stat()
	n := st.Size() / writerBlock
	buf := make([]byte, writerBlock)
	fmt.Println("writing")
	for g := uint64(1); ; g++ {
		for i := int64(0); i < n; i++ {
			for k := 0; k < writerBlock; k += 16 {
				binary.LittleEndian.PutUint64(buf[k:], g)
				binary.LittleEndian.PutUint64(buf[k+8:], uint64(i))
			}
			if _, err := f.WriteAt(buf, i*writerBlock); err != nil {
				fmt.Fprintln(os.Stderr, "writer:", err)
				return 1
			}
		}
	}
}

// startWriter runs the writer on path until the test ends.
func startWriter(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(cleanEnv(), writerEnv+"="+path)
	startHelper(t, "writer", cmd, "writing\n")
}

// pointInTime checks that the image at path is the writer's image at one
// moment: pass g on blocks [0,p), pass g-1 on [p,n).
func pointInTime(t *testing.T, what, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := len(b) / writerBlock
	gen := func(i int) uint64 {
		blk := b[i*writerBlock : (i+1)*writerBlock]
		g, idx := binary.LittleEndian.Uint64(blk), binary.LittleEndian.Uint64(blk[8:])
		for k := 0; k < writerBlock; k += 16 { // a torn block is not one moment either
			if binary.LittleEndian.Uint64(blk[k:]) != g || (g != 0 && binary.LittleEndian.Uint64(blk[k+8:]) != uint64(i)) {
				t.Fatalf("%s: block %d is torn", what, i)
			}
		}
		if g != 0 && idx != uint64(i) {
			t.Fatalf("%s: block %d holds block %d's data", what, i, idx)
		}
		return g
	}
	first := gen(0)
	p := n
	for i := 1; i < n; i++ {
		if g := gen(i); g != first {
			if g+1 != first {
				t.Fatalf("%s: block %d is from pass %d after blocks of pass %d: not one point in time", what, i, g, first)
			}
			p = i
			break
		}
	}
	for i := p; i < n; i++ {
		if g := gen(i); g != first-1 {
			t.Fatalf("%s: block %d is from pass %d, want %d (pass %d up to block %d): not one point in time", what, i, g, first-1, first, p)
		}
	}
	t.Logf("%s: pass %d up to block %d of %d, then pass %d", what, first, p, n, first-1)
}

// xfsDir is a fresh XFS filesystem (reflink on) mounted on a directory.
func xfsDir(t *testing.T, size int64) string {
	t.Helper()
	requireLoop(t)
	requireTool(t, "mkfs.xfs")
	img := filepath.Join(newHome(t), "xfs.img")
	makeSparse(t, img, size)
	sh(t, "mkfs.xfs", "-q", "-m", "reflink=1", img)
	return loopMount(t, img, false)
}

// TestInUseForceSnapshot: an image write-locked and written by another
// process is refused without --force (Cinder's hint, nothing written);
// --force backs it up through a reflink snapshot and the restore is one
// point in time; snapshot-create --force + backup-create --snapshot-id
// restores byte for byte to the snapshot; --allow-inconsistent records
// what it did.
func TestInUseForceSnapshot(t *testing.T) {
	requireRoot(t)
	dir := xfsDir(t, 1*gib)
	home := newHome(t)
	// Slow reads (one worker, zstd 12): a live read spans many of the
	// writer's passes, so only a snapshot can give one point in time.
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte("workers = 1\ncompression_level = 12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "vm.img")
	makeSparse(t, img, 64*mib)
	manage(t, home, "vm", img)
	startWriter(t, img)
	before := stateAll(t, home)
	_, stderr, code := run(t, home, "backup-create", "vm")
	assertRefused(t, "backup of a write-locked image", stderr, code, "Backing up an in-use volume must use the force flag", "write-locked", "--force")
	if stateAll(t, home) != before {
		t.Error("the refused backup changed the catalog")
	}
	var b map[string]any
	runJSON(t, home, &b, "backup-create", "--force", "--name", "forced", "vm")
	if b["status"] != "available" || b["consistency"] != "crash-consistent" || !strings.Contains(fmt.Sprint(b["consistency_detail"]), "deleted after") {
		t.Fatalf("--force backup: %v", b)
	}
	if left, _ := filepath.Glob(img + "@*"); len(left) != 0 {
		t.Errorf("the backup's snapshot is left behind: %v", left)
	}
	r := restoreNew(t, home, b["id"].(string), "forced-restore")
	pointInTime(t, "restore of the --force backup", r.Path)

	var sn map[string]any
	_, stderr, code = run(t, home, "snapshot-create", "vm")
	assertRefused(t, "snapshot of an in-use volume without --force", stderr, code, "in-use", "--force")
	runJSON(t, home, &sn, "snapshot-create", "--force", "--name", "s1", "vm")
	if sn["method"] != "reflink" || sn["status"] != "available" {
		t.Fatalf("snapshot on XFS: %v", sn)
	}
	snapFile := img + "@snapshot-" + sn["id"].(string)
	pointInTime(t, "the snapshot", snapFile)
	var fromSnap map[string]any
	runJSON(t, home, &fromSnap, "backup-create", "--snapshot-id", "s1", "vm")
	runJSON(t, home, &fromSnap, "backup-show", fromSnap["id"].(string))
	if fromSnap["snapshot_id"] != sn["id"] || fromSnap["consistency"] != "crash-consistent" {
		t.Errorf("backup of snapshot s1: snapshot_id %v, consistency %v", fromSnap["snapshot_id"], fromSnap["consistency"])
	}
	r2 := restoreNew(t, home, fromSnap["id"].(string), "snap-restore")
	compareFiles(t, snapFile, r2.Path, 64*mib)

	var live map[string]any
	runJSON(t, home, &live, "backup-create", "--allow-inconsistent", "vm")
	runJSON(t, home, &live, "backup-show", live["id"].(string))
	if live["consistency"] != "inconsistent-live-read" {
		t.Errorf("--allow-inconsistent backup: consistency %v", live["consistency"])
	}
	mustRun(t, home, "snapshot-delete", "s1")
	if exists(snapFile) {
		t.Errorf("%s is left after snapshot-delete", snapFile)
	}
}

// TestForceRefusedForBlockDevice: a block device cannot be snapshotted
// here (no LVM), so --force is refused naming --allow-inconsistent, and
// nothing is written.
func TestForceRefusedForBlockDevice(t *testing.T) {
	requireLoop(t)
	home := newHome(t)
	f := filepath.Join(home, "disk")
	randomFile(t, f, 8*mib, 3)
	dev := losetup(t, f)
	manage(t, home, "disk", dev)
	before := stateAll(t, home)
	_, stderr, code := run(t, home, "backup-create", "--force", "disk")
	assertRefused(t, "--force on a block device", stderr, code, "block device", "--allow-inconsistent")
	if stateAll(t, home) != before {
		t.Error("the refused backup changed the catalog")
	}
}

// TestKillDuringForcedBackup: kill -9 of the process backing up through a
// snapshot; the next command sees the backup error, the volume available,
// and the snapshot gone.
func TestKillDuringForcedBackup(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte("workers = 1\ncompression_level = 12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(home, "vol.img")
	randomFile(t, img, 256*mib, 5)
	manage(t, home, "vol", img)
	cmd := start(t, home, "-q", "backup-create", "--force", "--name", "killed", "vol")
	waitCreating(t, home, "killed")
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	var list []Backup
	runJSON(t, home, &list, "backup-list")
	if len(list) != 1 || list[0].Status != "error" || !strings.Contains(list[0].FailReason, "interrupted") {
		t.Fatalf("after kill -9: %+v; want the backup error (interrupted)", list)
	}
	if v := showVolume(t, home, "vol"); v.Status != "available" {
		t.Errorf("volume %s after kill -9, want available", v.Status)
	}
	if left, _ := filepath.Glob(img + "@*"); len(left) != 0 {
		t.Errorf("the killed backup's snapshot is left: %v", left)
	}
	if out := mustRun(t, home, "-f", "json", "snapshot-list", "--all-projects"); strings.TrimSpace(out) != "[]" {
		t.Errorf("snapshot records left: %s", out)
	}
}

// TestServiceListUnreachable: a second zone's repository goes away (its
// filesystem unmounted): service-list shows that zone down with the
// reason, and a backup to it ends error with the reason in fail_reason.
func TestServiceListUnreachable(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	far := mountTmpfs(t, "64m")
	conf := fmt.Sprintf("[zones.far]\nrepository = \"file://%s/repo\"\n", far)
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(home, "v.img")
	randomFile(t, img, 4*mib, 1)
	manage(t, home, "v", img)
	var b Backup
	runJSON(t, home, &b, "backup-create", "--availability-zone", "far", "v")
	type row struct {
		Binary, Zone, State, Status string
		Repository, Reason          *string
		UpdatedAt                   *string `json:"updated_at"`
	}
	var rows []row
	runJSON(t, home, &rows, "service-list")
	zones := map[string]row{}
	binaries := map[string]bool{}
	for _, r := range rows {
		binaries[r.Binary] = true
		if r.Binary == "volback-backup" {
			zones[r.Zone] = r
		}
	}
	if !binaries["volback-volume"] || !binaries["volback-catalog"] || zones["far"].State != "up" || zones["nova"].State != "up" {
		t.Fatalf("service-list: %+v", rows)
	}
	sh(t, "umount", far) // the export is gone: an empty directory is left
	runJSON(t, home, &rows, "service-list")
	for _, r := range rows {
		if r.Binary == "volback-backup" && r.Zone == "far" {
			if r.State != "down" || r.Reason == nil || r.UpdatedAt == nil {
				t.Errorf("far after its filesystem went: %+v, want down with a reason and the last heartbeat", r)
			}
		}
		if r.Binary == "volback-backup" && r.Zone == "nova" && r.State != "up" {
			t.Errorf("nova: %+v", r)
		}
	}
	_, stderr, code := run(t, home, "backup-create", "--availability-zone", "far", "v")
	assertRefused(t, "backup to the unreachable zone", stderr, code, "unreachable")
	var list []Backup
	runJSON(t, home, &list, "backup-list")
	if list[0].Status != "error" || !strings.Contains(list[0].FailReason, "unreachable") {
		t.Errorf("newest backup %+v, want error with the reason", list[0])
	}
	if exists(filepath.Join(far, "repo")) {
		t.Error("a new repository was made in place of the unreachable one")
	}
}

// TestConcurrentBackupsAndMount: two backup-create processes and a mount
// at once; both backups end available, the mount serves the earlier
// backup byte for byte while they run, and then shows all three.
func TestConcurrentBackupsAndMount(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	for i, n := range []string{"a", "b", "c"} {
		randomFile(t, filepath.Join(home, n+".img"), 96*mib, uint64(10+i))
		manage(t, home, n, filepath.Join(home, n+".img"))
	}
	first := backupCreate(t, home, "c")
	m := startMount(t, home)
	var wg sync.WaitGroup
	res := make([]volbackResult, 2)
	for i, n := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = runAs(home, nil, "-q", "backup-create", "--name", "conc-"+n, n)
		}()
	}
	compareFiles(t, filepath.Join(home, "c.img"), idFile(m.dir, first.ID), 96*mib)
	wg.Wait()
	for i, r := range res {
		if r.code != 0 {
			t.Errorf("backup %d: exit %d %s", i, r.code, r.stderr)
		}
	}
	var list []Backup
	runJSON(t, home, &list, "backup-list")
	for _, b := range list {
		if b.Status != "available" {
			t.Errorf("backup %s is %s", b.Name, b.Status)
		}
		b := b
		eventually(t, "backup "+b.Name+" in the mount", func() bool { return exists(idFile(m.dir, b.ID)) })
	}
	for _, b := range list {
		if strings.HasPrefix(b.Name, "conc-") {
			compareFiles(t, filepath.Join(home, strings.TrimPrefix(b.Name, "conc-")+".img"), idFile(m.dir, b.ID), 96*mib)
		}
	}
}
