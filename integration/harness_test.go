package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// bin is the volback binary built once by TestMain.
var bin string

// TestMain builds cmd/volback and its Ceph plugin once (with -tags from
// VOLBACK_TAGS) so every test drives the same binary a user would run.
// VOLBACK_BIN names an already built binary to test instead (its plugin
// beside it).
func TestMain(m *testing.M) {
	if sock := os.Getenv(fakeOwnerEnv); sock != "" {
		os.Exit(runFakeOwner(sock))
	}
	if img := os.Getenv(writerEnv); img != "" {
		os.Exit(runWriter(img))
	}
	if b := os.Getenv("VOLBACK_BIN"); b != "" {
		bin = b
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "volback-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "volback")
	// The Ceph plugin goes beside the binary, where volback looks for it.
	for _, b := range [][]string{{"-o", bin, "../cmd/volback"}, {"-buildmode=plugin", "-o", filepath.Join(dir, "volback-ceph.so"), "../cmd/volback-ceph"}} {
		args := []string{"build"}
		if tags := os.Getenv("VOLBACK_TAGS"); tags != "" {
			args = append(args, "-tags", tags)
		}
		cmd := exec.Command(goTool(), append(args, b...)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: building %s failed: %v\n", b[len(b)-1], err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// goTool is the go command on PATH, else the one of this toolchain's GOROOT.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		return filepath.Join(strings.TrimSpace(string(out)), "bin", "go")
	}
	return "/usr/local/go/bin/go"
}

// newHome makes a fresh volback home. It is short on purpose: the catalog
// owner listens on a unix socket inside it and socket paths are limited to
// 108 bytes, which t.TempDir's names (built from test names) can exceed.
func newHome(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vbh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// repoDir is the default file:// repository of a home.
func repoDir(home string) string { return filepath.Join(home, "repository") }

// run runs volback --home home args... and returns its output and exit code.
func run(t *testing.T, home string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	full := append([]string{"--home", home}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	code = 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("volback %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	if ctx.Err() != nil {
		t.Fatalf("volback %s: timed out after %v", strings.Join(args, " "), time.Since(start))
	}
	t.Logf("volback %s -> %d (%v)\nstderr: %s", strings.Join(args, " "), code,
		time.Since(start).Round(time.Millisecond), strings.TrimSpace(errb.String()))
	return out.String(), errb.String(), code
}

// cleanEnv drops variables that would override --home or the project.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VOLBACK_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// mustRun runs volback and fails the test unless it exits 0.
func mustRun(t *testing.T, home string, args ...string) string {
	t.Helper()
	out, stderr, code := run(t, home, args...)
	if code != 0 {
		t.Fatalf("volback %s: exit %d\nstderr: %s", strings.Join(args, " "), code, stderr)
	}
	return out
}

// runJSON runs volback -f json args..., requires exit 0 and decodes stdout into v.
func runJSON(t *testing.T, home string, v any, args ...string) {
	t.Helper()
	out := mustRun(t, home, append([]string{"-f", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("volback -f json %s: stdout is not the expected JSON: %v\nstdout: %s", strings.Join(args, " "), err, out)
	}
}

// Volume is a volume as printed by -f json.
type Volume struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	Status           string `json:"status"`
	Size             int64  `json:"size"`
	SizeBytes        int64  `json:"size_bytes"`
	Source           string `json:"source"`
	Path             string `json:"path"`
	Driver           string `json:"driver"`
	AvailabilityZone string `json:"availability_zone"`
	ProjectID        string `json:"project_id"`
}

// Backup is a backup as printed by -f json.
type Backup struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Status        string `json:"status"`
	VolumeID      string `json:"volume_id"`
	Size          int64  `json:"size"`
	SizeBytes     int64  `json:"size_bytes"`
	ObjectCount   int64  `json:"object_count"`
	StoredBytes   int64  `json:"stored_bytes"`
	IsIncremental bool   `json:"is_incremental"`
	FailReason    string `json:"fail_reason"`
}

// Restore is what backup-restore prints.
type Restore struct {
	BackupID   string `json:"backup_id"`
	VolumeID   string `json:"volume_id"`
	VolumeName string `json:"volume_name"`
}

func manage(t *testing.T, home, name, source string) Volume {
	t.Helper()
	var v Volume
	runJSON(t, home, &v, "manage", "--name", name, source)
	if v.ID == "" {
		t.Fatalf("manage %s: printed volume has no id", source)
	}
	return v
}

func backupCreate(t *testing.T, home, volume string) Backup {
	t.Helper()
	var b Backup
	runJSON(t, home, &b, "backup-create", volume)
	if b.ID == "" || b.Status != "available" {
		t.Fatalf("backup-create %s: got id %q status %q, want an available backup", volume, b.ID, b.Status)
	}
	return b
}

func showVolume(t *testing.T, home, volume string) Volume {
	t.Helper()
	var v Volume
	runJSON(t, home, &v, "show", volume)
	return v
}

// restoreNew restores a backup into a new volume and returns that volume.
func restoreNew(t *testing.T, home, backup, name string) Volume {
	t.Helper()
	var r Restore
	runJSON(t, home, &r, "backup-restore", "--name", name, backup)
	if r.BackupID != backup && !strings.HasPrefix(r.BackupID, backup) {
		t.Errorf("backup-restore printed backup_id %q, want %q", r.BackupID, backup)
	}
	if r.VolumeName != name {
		t.Errorf("backup-restore printed volume_name %q, want %q", r.VolumeName, name)
	}
	v := showVolume(t, home, r.VolumeID)
	if v.Path == "" {
		t.Fatalf("restored volume %s has no path", r.VolumeID)
	}
	return v
}

// --- environment checks ---

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mounts); run as root — CI does")
	}
}

func requireLoop(t *testing.T) {
	t.Helper()
	requireRoot(t)
	requireTool(t, "losetup")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices: /dev/loop-control is missing")
	}
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("needs %s on PATH", name)
	}
}

// sh runs a system command and fails the test on error.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// --- images ---

// makeSparse creates (or truncates to) a sparse file of size bytes.
func makeSparse(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// randomBytes is n pseudo-random bytes, the same for the same seed.
func randomBytes(seed uint64, n int64) []byte {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// writeRandom writes n seeded random bytes at off in path (creating it),
// 1 MiB at a time.
func writeRandom(t *testing.T, path string, off, n int64, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	r := rand.NewChaCha8(key)
	buf := make([]byte, mib)
	for done := int64(0); done < n; {
		m := min(int64(len(buf)), n-done)
		r.Read(buf[:m])
		if _, err := f.WriteAt(buf[:m], off+done); err != nil {
			t.Fatal(err)
		}
		done += m
	}
}

// randomFile creates path with size seeded random bytes.
func randomFile(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	makeSparse(t, path, 0)
	writeRandom(t, path, 0, size, seed)
}

// ext4Image makes a size-byte ext4 image at path holding files (relative
// path -> content) and returns their sha256s.
func ext4Image(t *testing.T, path string, size int64, files map[string][]byte) map[string]string {
	t.Helper()
	requireLoop(t)
	requireTool(t, "mkfs.ext4")
	makeSparse(t, path, size)
	sh(t, "mkfs.ext4", "-F", "-q", path)
	mnt := loopMount(t, path, false)
	sums := map[string]string{}
	for name, data := range files {
		p := filepath.Join(mnt, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(data)
		sums[name] = hex.EncodeToString(s[:])
	}
	unmount(t, mnt)
	return sums
}

// loopMount mounts an image (read-only when ro) on a fresh directory; the
// mount is undone in t.Cleanup if the test has not done it.
func loopMount(t *testing.T, image string, ro bool) string {
	t.Helper()
	requireLoop(t)
	mnt, err := os.MkdirTemp("", "vbmnt-")
	if err != nil {
		t.Fatal(err)
	}
	opts := "loop"
	if ro {
		opts = "loop,ro,noload"
	}
	t.Cleanup(func() {
		if mounted(mnt) {
			exec.Command("umount", "-l", mnt).Run()
		}
		os.Remove(mnt)
	})
	sh(t, "mount", "-o", opts, image, mnt)
	return mnt
}

func unmount(t *testing.T, mnt string) {
	t.Helper()
	sh(t, "umount", mnt)
}

// mounted reports whether dir is a mount point in /proc/mounts.
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

// mountTmpfs mounts a tmpfs of the given size option ("8m") on a fresh
// directory, unmounted in t.Cleanup.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	requireRoot(t)
	dir, err := os.MkdirTemp("", "vbtmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted(dir) {
			exec.Command("umount", "-l", dir).Run()
		}
		os.Remove(dir)
	})
	sh(t, "mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir)
	return dir
}

// losetup attaches file to a free loop device, detached in t.Cleanup.
func losetup(t *testing.T, file string) string {
	t.Helper()
	requireLoop(t)
	dev := sh(t, "losetup", "-f", "--show", file)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// useRepository writes home/volback.toml pointing zone nova at dir.
func useRepository(t *testing.T, home, dir string) {
	t.Helper()
	conf := fmt.Sprintf("[zones.nova]\nrepository = \"file://%s\"\n", dir)
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startHelper starts cmd, a helper process (this test binary, which
// TestMain turns into the helper its environment names), kills it when the
// test ends, and waits until it says ready on stdout.
func startHelper(t *testing.T, what string, cmd *exec.Cmd, ready string) {
	t.Helper()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make([]byte, len(ready))
	if _, err := io.ReadFull(out, line); err != nil || string(line) != ready {
		t.Fatalf("%s did not start: it said %q (%v)", what, line, err)
	}
}

// tmpfsRepository is a new home whose zone nova's repository is repo on a
// tmpfs of size mounted at mnt, with the volume "v" managed from the image
// img of n bytes of seed's data: a repository that can fill up or turn
// read-only under a test.
func tmpfsRepository(t *testing.T, size string, n int64, seed uint64) (home, mnt, repo, img string) {
	t.Helper()
	mnt = mountTmpfs(t, size)
	repo = filepath.Join(mnt, "repo")
	home = newHome(t)
	useRepository(t, home, repo)
	img = filepath.Join(t.TempDir(), "v.img")
	randomFile(t, img, n, seed)
	manage(t, home, "v", img)
	return home, mnt, repo, img
}

// --- measuring ---

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("hashing %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// allocated is the bytes a file occupies on disk (st_blocks*512), as du.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// dirSize is the sum of the sizes of the regular files under dir (0 if dir
// does not exist).
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// filesUnder lists the regular files under dir (relative), none if dir is missing.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// dataExtents lists the [start, end) data extents of a file by
// SEEK_DATA/SEEK_HOLE.
func dataExtents(t *testing.T, f *os.File, size int64) [][2]int64 {
	t.Helper()
	var ext [][2]int64
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA %s at %d: %v", f.Name(), off, err)
		}
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatalf("SEEK_HOLE %s at %d: %v", f.Name(), start, err)
		}
		ext = append(ext, [2]int64{start, end})
		off = end
	}
	return ext
}

// compareSparse checks that two files of equal size hold the same bytes,
// reading only the ranges where either has data: where both have holes both
// read as zeros. That makes comparing mostly-empty 16 GiB images cheap.
func compareSparse(t *testing.T, want, got string) {
	t.Helper()
	a, b, done := openBoth(t, want, got)
	defer done()
	sa, sb := fileSize(t, want), fileSize(t, got)
	if sa != sb {
		t.Fatalf("%s is %d bytes, want %d (as %s)", got, sb, sa, want)
	}
	ranges := append(dataExtents(t, a, sa), dataExtents(t, b, sb)...)
	for _, r := range ranges {
		compareRange(t, a, b, r[0], r[1])
	}
}

// compareRange compares [start, end) of two open files.
func compareRange(t *testing.T, a, b *os.File, start, end int64) {
	t.Helper()
	ba, bb := make([]byte, 4*mib), make([]byte, 4*mib)
	for off := start; off < end; {
		n := min(int64(len(ba)), end-off)
		if _, err := a.ReadAt(ba[:n], off); err != nil {
			t.Fatalf("read %s at %d: %v", a.Name(), off, err)
		}
		if _, err := b.ReadAt(bb[:n], off); err != nil {
			t.Fatalf("read %s at %d: %v", b.Name(), off, err)
		}
		if !bytes.Equal(ba[:n], bb[:n]) {
			for i := range n {
				if ba[i] != bb[i] {
					t.Fatalf("%s differs from %s at byte %d", b.Name(), a.Name(), off+i)
				}
			}
		}
		off += n
	}
}

// compareFiles compares the first n bytes of two files or devices.
func compareFiles(t *testing.T, want, got string, n int64) {
	t.Helper()
	a, b, done := openBoth(t, want, got)
	defer done()
	compareRange(t, a, b, 0, n)
}

// openBoth opens two files for reading; done closes them (promptly: a
// file left open on a mount keeps the mount busy).
func openBoth(t *testing.T, x, y string) (a, b *os.File, done func()) {
	t.Helper()
	a, err := os.Open(x)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = os.Open(y); err != nil {
		a.Close()
		t.Fatal(err)
	}
	return a, b, func() { a.Close(); b.Close() }
}

// --- refusals ---

// assertRefused checks a refusal: non-zero exit and one stderr line of the
// form "volback: ..." naming each of words (case-insensitive).
func assertRefused(t *testing.T, what, stderr string, code int, words ...string) {
	t.Helper()
	if code == 0 {
		t.Errorf("%s: exit 0, want a refusal", what)
		return
	}
	msg := strings.TrimSpace(stderr)
	if msg == "" {
		t.Errorf("%s: exit %d with nothing on stderr", what, code)
		return
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("%s: stderr has several lines, want one:\n%s", what, msg)
	}
	if !strings.HasPrefix(msg, "volback: ") {
		t.Errorf("%s: stderr %q does not start with \"volback: \"", what, msg)
	}
	for _, w := range words {
		if !strings.Contains(strings.ToLower(msg), strings.ToLower(w)) {
			t.Errorf("%s: stderr %q does not mention %q", what, msg, w)
		}
	}
}

// state is what a refusal must leave unchanged: volume and backup lists.
func state(t *testing.T, home string) string {
	t.Helper()
	vols := mustRun(t, home, "-f", "json", "list")
	backups := mustRun(t, home, "-f", "json", "backup-list")
	return vols + "\n" + backups
}
