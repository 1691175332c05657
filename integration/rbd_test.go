package integration

// RBD volumes and RADOS repositories through the binary, on the throwaway
// Ceph cluster of integration/ceph (start.sh). Images are written with
// `rbd import-diff` and compared with `rbd export`s taken when each backup
// was made, so nothing here trusts volback to read back what it wrote.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/integration/ceph"
)

// cephTest is a test's view of the cluster: the env and unique names.
type cephTest struct {
	t *testing.T
	ceph.Env
	id string // unique per test, for image, namespace and pool names
}

var cephSeq atomic.Int64

// useCeph gets the test cluster (skipping, or failing under
// VOLBACK_CEPH_REQUIRED=1, without one) and checks that the binary was
// built with Ceph support.
func useCeph(t *testing.T) *cephTest {
	t.Helper()
	return cephFor(t, ceph.Cluster(t))
}

func cephFor(t *testing.T, e ceph.Env) *cephTest {
	t.Helper()
	c := &cephTest{t: t, Env: e, id: fmt.Sprintf("it%d-%d-%d", time.Now().UnixNano()%1e9, os.Getpid(), cephSeq.Add(1))}
	out, _ := exec.Command(bin, "--home", newHome(t), "-f", "json", "show", "rbd://"+e.RBDPool+"/none").CombinedOutput()
	if strings.Contains(string(out), "built without Ceph support") || strings.Contains(string(out), "volback-ceph.so") {
		t.Fatalf("the volback under test has no Ceph support (%s); run the integration tests with VOLBACK_TAGS=ceph,pacific (the Makefile does)", bytes.TrimSpace(out))
	}
	return c
}

// args are the cluster's conf and user for the rbd and ceph tools.
func (c *cephTest) args(a ...string) []string {
	return append([]string{"--conf", c.Conf, "--id", c.User}, a...)
}

func (c *cephTest) rbd(a ...string) string {
	c.t.Helper()
	switch a[0] {
	case "import", "export", "import-diff", "rm":
		a = append([]string{a[0], "--no-progress"}, a[1:]...)
	}
	return sh(c.t, "rbd", c.args(a...)...)
}

// query is the conf/user part of volback's rbd:// and rados:// URLs.
func (c *cephTest) query(extra ...string) string {
	q := url.Values{"conf": {c.Conf}, "user": {c.User}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return q.Encode()
}

// locator is volback's locator of image in pool.
func (c *cephTest) locator(pool, image string, extra ...string) string {
	return "rbd://" + pool + "/" + image + "?" + c.query(extra...)
}

// radosRepo is a rados:// repository of its own (a fresh namespace).
func (c *cephTest) radosRepo(name string, extra ...string) string {
	return "rados://" + c.Pool + "?" + c.query(append([]string{"namespace", c.id + "-" + name}, extra...)...)
}

// newImage creates an image of size bytes in pool, removed (with its
// snapshots) when the test ends.
func (c *cephTest) newImage(pool, name string, size int64) string {
	c.t.Helper()
	image := c.id + "-" + name
	c.rbd("create", "--size", fmt.Sprintf("%dB", size), pool+"/"+image)
	c.cleanupImage(pool, image)
	return image
}

// cleanupImage removes pool/image and its snapshots at the end of the test.
func (c *cephTest) cleanupImage(pool, image string) {
	c.t.Cleanup(func() {
		exec.Command("rbd", c.args("snap", "purge", "--no-progress", pool+"/"+image)...).Run()
		exec.Command("rbd", c.args("rm", "--no-progress", pool+"/"+image)...).Run()
	})
}

// cleanupVolumes removes, at the end of the test, the images volback
// created in pool for this test's home (volume-<id>).
func (c *cephTest) cleanupVolumes(home string) {
	c.t.Cleanup(func() {
		var vols []Volume
		out, _, code := run(c.t, home, "-f", "json", "list", "--all-projects")
		if code != 0 || jsonUnmarshal(out, &vols) != nil {
			return
		}
		for _, v := range vols {
			if p, ok := strings.CutPrefix(v.Path, "rbd://"); ok {
				spec, _, _ := strings.Cut(p, "?")
				exec.Command("rbd", c.args("snap", "purge", "--no-progress", spec)...).Run()
				exec.Command("rbd", c.args("rm", "--no-progress", spec)...).Run()
			}
		}
	})
}

// piece is one change to an image: data written at off, or zero bytes
// discarded at off.
type piece struct {
	off  int64
	data []byte
	zero int64
}

// patch applies pieces to pool/image with `rbd import-diff` (a diff of
// format v1 without snapshot records: plain writes and discards).
func (c *cephTest) patch(pool, image string, pieces ...piece) {
	c.t.Helper()
	var d bytes.Buffer
	d.WriteString("rbd diff v1\n")
	for _, p := range pieces {
		if p.data != nil {
			d.WriteByte('w')
			binary.Write(&d, binary.LittleEndian, [2]uint64{uint64(p.off), uint64(len(p.data))})
			d.Write(p.data)
		} else {
			d.WriteByte('z')
			binary.Write(&d, binary.LittleEndian, [2]uint64{uint64(p.off), uint64(p.zero)})
		}
	}
	d.WriteByte('e')
	f := filepath.Join(c.t.TempDir(), "patch.diff")
	if err := os.WriteFile(f, d.Bytes(), 0o600); err != nil {
		c.t.Fatal(err)
	}
	c.rbd("import-diff", f, pool+"/"+image)
}

// export is `rbd export` of pool/image[@snap] into a file of the test.
func (c *cephTest) export(spec string) string {
	c.t.Helper()
	f := filepath.Join(c.t.TempDir(), strings.NewReplacer("/", "_", "@", "_").Replace(spec)+".img")
	c.rbd("export", spec, f)
	return f
}

// sameAsExport requires the image of volume locator loc to equal the file want.
func (c *cephTest) sameAsExport(what, loc, want string) {
	c.t.Helper()
	spec, ok := strings.CutPrefix(loc, "rbd://")
	if !ok {
		c.t.Fatalf("%s: %s is not an RBD volume", what, loc)
	}
	spec, _, _ = strings.Cut(spec, "?")
	got := c.export(spec)
	if sha256File(c.t, got) != sha256File(c.t, want) {
		c.t.Fatalf("%s: the image %s differs from the rbd export made when it was backed up", what, spec)
	}
}

// snapshots lists the snapshot names of pool/image.
func (c *cephTest) snapshots(pool, image string) []string {
	c.t.Helper()
	var snaps []struct {
		Name string `json:"name"`
	}
	if err := jsonUnmarshal(c.rbd("snap", "ls", "--format", "json", pool+"/"+image), &snaps); err != nil {
		c.t.Fatal(err)
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	return names
}

// writeConf writes home/volback.toml.
func writeConf(t *testing.T, home, conf string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// backupShow is backup-show as JSON, with the fields these tests read.
type backupShown struct {
	Backup
	ChangeTracking    string `json:"change_tracking"`
	Consistency       string `json:"consistency"`
	ConsistencyDetail string `json:"consistency_detail"`
	SnapshotID        string `json:"snapshot_id"`
}

func backupShow(t *testing.T, home, id string) backupShown {
	t.Helper()
	var b backupShown
	runJSON(t, home, &b, "backup-show", id)
	return b
}

func backupArgs(t *testing.T, home string, args ...string) Backup {
	t.Helper()
	var b Backup
	runJSON(t, home, &b, append([]string{"backup-create"}, args...)...)
	if b.Status != "available" {
		t.Fatalf("backup-create %v: status %q, want available", args, b.Status)
	}
	return b
}

// restoreTo restores backup into a new volume of zone (its volumes
// setting places it) and returns the volume.
func restoreTo(t *testing.T, home, backup, name, zone string) Volume {
	t.Helper()
	var v Volume
	args := []string{"create", "--name", name, "--backup-id", backup}
	if zone != "" {
		args = append(args, "--availability-zone", zone)
	}
	runJSON(t, home, &v, append(args, "0")...)
	return v
}

// TestRBDBackupsRestoreEveryPointInTime: a full backup of an RBD image and
// incrementals after scattered writes and discards, each read through its
// own snapshot and (the incrementals) only where RBD's diff says the image
// changed; every one restores to a new image identical to an rbd export
// taken when it was made, and the latest also over an existing image.
func TestRBDBackupsRestoreEveryPointInTime(t *testing.T) {
	c := useCeph(t)
	home := newHome(t)
	writeConf(t, home, fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\nvolumes = \"rbd://%s?%s\"\n", repoDir(home), c.RBDPool, c.query()))
	c.cleanupVolumes(home)
	const size = 48 * mib
	image := c.newImage(c.RBDPool, "src", size)
	c.patch(c.RBDPool, image, piece{off: 0, data: randomBytes(1, 20*mib)}, piece{off: 30 * mib, data: randomBytes(2, 5*mib)})
	vol := manage(t, home, "src", c.locator(c.RBDPool, image))
	if vol.Driver != "rbd" || vol.SizeBytes != size {
		t.Fatalf("manage of an RBD image: driver %q size %d, want rbd and %d", vol.Driver, vol.SizeBytes, size)
	}

	type point struct{ backup, export string }
	var points []point
	b := backupArgs(t, home, "src")
	points = append(points, point{b.ID, c.export(c.RBDPool + "/" + image)})
	changes := [][]piece{
		{{off: 100_000, data: randomBytes(3, 5000)}, {off: 7*mib + 12345, data: randomBytes(4, 64*kib)}},
		{{off: 4 * mib, zero: 4 * mib}, {off: 16*mib + 100, zero: 70_000}, {off: 44 * mib, data: randomBytes(5, mib)}}, // a whole object discarded, part of one, a new object
		{{off: 0, data: randomBytes(6, 3*mib)}, {off: 31 * mib, zero: mib}},
	}
	for i, ch := range changes {
		c.patch(c.RBDPool, image, ch...)
		b := backupArgs(t, home, "--incremental", "src")
		if !b.IsIncremental {
			t.Fatalf("incremental %d is not marked incremental", i)
		}
		shown := backupShow(t, home, b.ID)
		if want := "read only the changes since snapshot volback." + points[len(points)-1].backup; !strings.Contains(shown.ChangeTracking, want) {
			t.Errorf("incremental %d: change_tracking %q, want %q", i, shown.ChangeTracking, want)
		}
		if shown.StoredBytes > 4*mib {
			t.Errorf("incremental %d stored %d bytes for changes of at most 3 MiB", i, shown.StoredBytes)
		}
		points = append(points, point{b.ID, c.export(c.RBDPool + "/" + image)})
	}
	if got, want := c.snapshots(c.RBDPool, image), []string{"volback." + points[2].backup, "volback." + points[3].backup}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("snapshots kept on the image: %v, want the newest 2 (change_tracking_snapshots' default): %v", got, want)
	}

	var restored []Volume
	for i, p := range points {
		v := restoreTo(t, home, p.backup, fmt.Sprintf("r%d", i), "")
		if !strings.HasPrefix(v.Path, "rbd://"+c.RBDPool+"/volume-"+v.ID) || v.Driver != "rbd" {
			t.Fatalf("restore %d to a new volume of a zone whose volumes are RBD: path %s driver %s", i, v.Path, v.Driver)
		}
		c.sameAsExport(fmt.Sprintf("backup %d restored to a new image", i), v.Path, p.export)
		restored = append(restored, v)
	}
	// The latest over an existing image (the restore of the first).
	last := points[len(points)-1]
	mustRun(t, home, "backup-restore", "--volume", restored[0].ID, last.backup)
	c.sameAsExport("the latest backup restored over an existing image", restored[0].Path, last.export)
}

// TestRBDSnapshotGoneFallback: when the parent's snapshot is gone, the
// incremental reads the whole image, says so in backup-show, and restores.
func TestRBDSnapshotGoneFallback(t *testing.T) {
	c := useCeph(t)
	home := newHome(t)
	writeConf(t, home, fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\nvolumes = \"rbd://%s?%s\"\n", repoDir(home), c.RBDPool, c.query()))
	c.cleanupVolumes(home)
	image := c.newImage(c.RBDPool, "src", 16*mib)
	c.patch(c.RBDPool, image, piece{off: 0, data: randomBytes(7, 12*mib)})
	manage(t, home, "src", c.locator(c.RBDPool, image))
	full := backupArgs(t, home, "src")
	c.rbd("snap", "rm", c.RBDPool+"/"+image+"@volback."+full.ID)
	c.patch(c.RBDPool, image, piece{off: 5 * mib, data: randomBytes(8, 10_000)})
	inc := backupArgs(t, home, "--incremental", "src")
	export := c.export(c.RBDPool + "/" + image)
	shown := backupShow(t, home, inc.ID)
	for _, w := range []string{"full read", "volback." + full.ID, "no longer exists"} {
		if !strings.Contains(shown.ChangeTracking, w) {
			t.Errorf("backup-show of the fallback: change_tracking %q does not say %q", shown.ChangeTracking, w)
		}
	}
	if table := mustRun(t, home, "backup-show", inc.ID); !strings.Contains(table, "change_tracking") || !strings.Contains(table, "full read") {
		t.Errorf("backup-show's table does not show the fallback:\n%s", table)
	}
	v := restoreTo(t, home, inc.ID, "r", "")
	c.sameAsExport("the fallback incremental restored", v.Path, export)
	// The next incremental diffs against the fallback's own snapshot again.
	c.patch(c.RBDPool, image, piece{off: mib, data: randomBytes(9, 100)})
	next := backupArgs(t, home, "--incremental", "src")
	if ct := backupShow(t, home, next.ID).ChangeTracking; !strings.Contains(ct, "read only the changes since snapshot volback."+inc.ID) {
		t.Errorf("after the fallback, change_tracking %q", ct)
	}
}

// TestRBDInUseForceAndSnapshotID: an image another client watches is
// refused without --force, named; with --force it is read through a
// snapshot; restoring into it is refused; a snapshot-create'd snapshot is
// backed up with --snapshot-id as of its moment, and the next incremental
// diffs against it.
func TestRBDInUseForceAndSnapshotID(t *testing.T) {
	c := useCeph(t)
	home := newHome(t)
	writeConf(t, home, fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\nvolumes = \"rbd://%s?%s\"\n", repoDir(home), c.RBDPool, c.query()))
	c.cleanupVolumes(home)
	image := c.newImage(c.RBDPool, "src", 16*mib)
	c.patch(c.RBDPool, image, piece{off: 0, data: randomBytes(10, 9*mib)})
	manage(t, home, "src", c.locator(c.RBDPool, image))
	first := backupArgs(t, home, "src")

	stop := c.watch(c.RBDPool + "/" + image)
	_, stderr, code := run(t, home, "backup-create", "src")
	assertRefused(t, "backup of a watched image without --force", stderr, code, "in-use", "--force", "watched by client.")
	_, stderr, code = run(t, home, "backup-restore", "--volume", "src", first.ID)
	assertRefused(t, "restore into a watched image", stderr, code, "in use", "watched by client.")
	forced := backupArgs(t, home, "--force", "src")
	export := c.export(c.RBDPool + "/" + image)
	stop()
	if s := backupShow(t, home, forced.ID); s.Consistency != "crash-consistent" || !strings.Contains(s.ConsistencyDetail, "snapshot") {
		t.Errorf("--force backup: consistency %q (%s), want crash-consistent through a snapshot", s.Consistency, s.ConsistencyDetail)
	}
	c.sameAsExport("the --force backup restored", restoreTo(t, home, forced.ID, "forced", "").Path, export)

	var snap struct {
		ID string `json:"id"`
	}
	runJSON(t, home, &snap, "snapshot-create", "--name", "s1", "src")
	atSnap := c.export(c.RBDPool + "/" + image)
	c.patch(c.RBDPool, image, piece{off: 2 * mib, data: randomBytes(11, 300_000)})
	fromSnap := backupArgs(t, home, "--incremental", "--snapshot-id", snap.ID, "src")
	if s := backupShow(t, home, fromSnap.ID); s.SnapshotID != snap.ID {
		t.Errorf("--snapshot-id backup records snapshot %q, want %s", s.SnapshotID, snap.ID)
	}
	c.sameAsExport("the --snapshot-id backup restored", restoreTo(t, home, fromSnap.ID, "fromsnap", "").Path, atSnap)
	now := c.export(c.RBDPool + "/" + image)
	next := backupArgs(t, home, "--incremental", "src")
	if ct := backupShow(t, home, next.ID).ChangeTracking; !strings.Contains(ct, "read only the changes since snapshot snapshot-"+snap.ID) {
		t.Errorf("the incremental after a --snapshot-id backup: change_tracking %q, want the changes since that snapshot", ct)
	}
	c.sameAsExport("the incremental after --snapshot-id restored", restoreTo(t, home, next.ID, "next", "").Path, now)
}

// watch runs `rbd watch` on spec (a client that has the image open, as a
// virtual machine would) until the returned function is called.
func (c *cephTest) watch(spec string) func() {
	c.t.Helper()
	cmd := exec.Command("rbd", c.args("watch", spec)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	stop := sync.OnceFunc(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	c.t.Cleanup(stop)
	buf := make([]byte, 256)
	if n, err := out.Read(buf); err != nil || !strings.Contains(string(buf[:n]), "press enter") {
		c.t.Fatalf("rbd watch %s: %q, %v", spec, buf[:n], err)
	}
	return stop
}

// TestRBDCrossZoneRestore: zone z1 keeps its backups in a RADOS repository
// and its volumes in pool A, zone z2 its volumes in pool B; a backup of an
// image of pool A restores as a new image in pool B.
func TestRBDCrossZoneRestore(t *testing.T) {
	c := useCeph(t)
	poolB := c.id + "-b"
	sh(t, "ceph", c.args("osd", "pool", "create", poolB, "8")...)
	t.Cleanup(func() {
		exec.Command("ceph", c.args("osd", "pool", "rm", poolB, poolB, "--yes-i-really-really-mean-it")...).Run()
	})
	c.rbd("pool", "init", poolB)
	home := newHome(t)
	writeConf(t, home, fmt.Sprintf(`default_availability_zone = "z1"
[zones.z1]
repository = %q
volumes = "rbd://%s?%s"
[zones.z2]
repository = "file://%s"
volumes = "rbd://%s?%s"
`, c.radosRepo("z1"), c.RBDPool, c.query(), repoDir(home), poolB, c.query()))
	c.cleanupVolumes(home)
	image := c.newImage(c.RBDPool, "src", 24*mib)
	c.patch(c.RBDPool, image, piece{off: mib, data: randomBytes(12, 10*mib)}, piece{off: 20 * mib, data: randomBytes(13, mib)})
	manage(t, home, "src", c.locator(c.RBDPool, image))
	b := backupArgs(t, home, "src")
	export := c.export(c.RBDPool + "/" + image)
	var shown struct {
		Container        string `json:"container"`
		AvailabilityZone string `json:"availability_zone"`
	}
	runJSON(t, home, &shown, "backup-show", b.ID)
	if !strings.HasPrefix(shown.Container, "rados://") || shown.AvailabilityZone != "z1" {
		t.Fatalf("backup of zone z1: container %s zone %s, want its RADOS repository", shown.Container, shown.AvailabilityZone)
	}
	v := restoreTo(t, home, b.ID, "inB", "z2")
	if !strings.HasPrefix(v.Path, "rbd://"+poolB+"/volume-") || v.AvailabilityZone != "z2" {
		t.Fatalf("restore to zone z2: volume at %s in zone %s, want an image in pool %s", v.Path, v.AvailabilityZone, poolB)
	}
	c.sameAsExport("a backup of pool A restored into pool B", v.Path, export)
	mustRun(t, home, "delete", v.ID)
	if out, _ := exec.Command("rbd", c.args("ls", poolB)...).Output(); strings.Contains(string(out), "volume-"+v.ID) {
		t.Errorf("deleting the restored volume left its image in pool %s", poolB)
	}
}

// TestRBDMountFromRADOS: a backup kept in a RADOS repository is served by
// the FUSE mount, byte for byte the image as it was backed up.
func TestRBDMountFromRADOS(t *testing.T) {
	c := useCeph(t)
	requireRoot(t)
	home := newHome(t)
	writeConf(t, home, fmt.Sprintf("[zones.nova]\nrepository = %q\n", c.radosRepo("mount")))
	image := c.newImage(c.RBDPool, "src", 20*mib)
	c.patch(c.RBDPool, image, piece{off: 0, data: randomBytes(14, 6*mib)}, piece{off: 13 * mib, data: randomBytes(15, 3*mib)})
	manage(t, home, "src", c.locator(c.RBDPool, image))
	b := backupArgs(t, home, "src")
	export := c.export(c.RBDPool + "/" + image)
	m := startMount(t, home)
	img := filepath.Join(m.dir, "by-id", b.ID+".img")
	if got, want := sha256File(t, img), sha256File(t, export); got != want {
		t.Fatalf("the mount's %s differs from the rbd export made at backup time", img)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
