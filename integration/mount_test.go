package integration

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mountProc is a `volback mount` running in the background.
type mountProc struct {
	cmd    *exec.Cmd
	dir    string
	stderr *syncBuffer
	done   chan struct{} // closed when the process exited; then err is set
	err    error
}

// syncBuffer is a bytes.Buffer the process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMount runs `volback mount args... DIR` on a fresh directory and waits
// until by-id/ is served. Whatever the test does, t.Cleanup stops the
// process and leaves nothing mounted.
func startMount(t *testing.T, home string, args ...string) *mountProc {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	dir, err := os.MkdirTemp("", "vbm-")
	if err != nil {
		t.Fatal(err)
	}
	m := &mountProc{dir: dir, stderr: &syncBuffer{}, done: make(chan struct{})}
	m.cmd = exec.Command(bin, append(append([]string{"--home", home, "mount"}, args...), dir)...)
	m.cmd.Env = cleanEnv()
	m.cmd.Stderr = m.stderr
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		if !m.exited(0) {
			m.cmd.Process.Signal(syscall.SIGTERM)
			if !m.exited(10 * time.Second) {
				exec.Command("umount", "-l", dir).Run()
				m.cmd.Process.Kill()
				<-m.done
			}
		}
		if mounted(dir) {
			exec.Command("umount", "-l", dir).Run()
		}
		os.Remove(dir)
		t.Logf("volback mount stderr:\n%s", m.stderr.String())
	})
	deadline := time.Now().Add(20 * time.Second)
	for !mounted(dir) || !isDir(filepath.Join(dir, "by-id")) {
		if m.exited(0) {
			t.Fatalf("volback mount exited early (%v):\n%s", m.err, m.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("volback mount did not serve %s within 20s:\n%s", dir, m.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

// exited reports whether the process ended within d.
func (m *mountProc) exited(d time.Duration) bool {
	select {
	case <-m.done:
		return true
	case <-time.After(d):
		return false
	}
}

// waitExit waits for the process to end by itself and requires status 0
// and nothing left in /proc/mounts.
func (m *mountProc) waitExit(t *testing.T, why string) {
	t.Helper()
	if !m.exited(15 * time.Second) {
		t.Fatalf("volback mount still running 15s after %s", why)
	}
	if m.err != nil {
		t.Errorf("volback mount after %s: %v, want exit status 0\n%s", why, m.err, m.stderr.String())
	}
	if mounted(m.dir) {
		t.Errorf("%s is still in /proc/mounts after %s", m.dir, why)
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// eventually polls cond for up to 10s (the mount caches listings ~1s).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// shownBackup is what the mount's names are built from.
type shownBackup struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	VolumeName string    `json:"volume_name"`
	SizeBytes  int64     `json:"size_bytes"`
	CreatedAt  time.Time `json:"created_at"`
}

func showBackup(t *testing.T, home, id string) shownBackup {
	t.Helper()
	var b shownBackup
	runJSON(t, home, &b, "backup-show", id)
	return b
}

// volumeFile is the by-volume path of b under mnt.
func volumeFile(mnt string, b shownBackup) string {
	n := b.Name
	if n == "" {
		n = b.ID
	}
	return filepath.Join(mnt, "by-volume", b.VolumeName, b.CreatedAt.UTC().Format("2006-01-02T15-04-05Z")+"_"+n+".img")
}

func idFile(mnt, id string) string { return filepath.Join(mnt, "by-id", id+".img") }

// TestMountImage backs up an ext4 image and reads it back through the
// mount: byte compare, loop-mounted files, a read-only loop device; writes
// are refused; `volback umount` of a busy mount is refused, `umount --lazy`
// detaches it with a warning, and the mount process exits 0 once the last
// file closes.
func TestMountImage(t *testing.T) {
	requireLoop(t)
	requireTool(t, "cmp")
	home := newHome(t)
	img := filepath.Join(home, "fs.img")
	files := map[string][]byte{
		"random.bin":        randomBytes(21, 7*mib+5),
		"dir/notes.txt":     []byte(strings.Repeat("every backup is a block image\n", 5000)),
		"dir/sub/small.bin": randomBytes(22, 3*kib+1),
		"zeros-then-data":   append(make([]byte, 3*mib), randomBytes(23, 64*kib)...),
		"empty":             {},
	}
	sums := ext4Image(t, img, 256*mib, files)
	want := sha256File(t, img)
	manage(t, home, "fs", img)
	b := showBackup(t, home, backupCreate(t, home, "fs").ID)

	m := startMount(t, home, "--cache-size", "64M")
	byID, byVol := idFile(m.dir, b.ID), volumeFile(m.dir, b)
	if got := fileSize(t, byID); got != 256*mib {
		t.Fatalf("%s is %d bytes, want %d", byID, got, 256*mib)
	}
	sh(t, "cmp", img, byID)

	// The files inside, through a read-only loop mount of the image file.
	fsMnt, err := os.MkdirTemp("", "vbmnt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if mounted(fsMnt) {
			exec.Command("umount", "-l", fsMnt).Run()
		}
		os.Remove(fsMnt)
	})
	sh(t, "mount", "-o", "loop,ro", byID, fsMnt)
	for name, sum := range sums {
		if got := sha256File(t, filepath.Join(fsMnt, name)); got != sum {
			t.Errorf("file %s in the mounted backup: sha256 %s, want %s", name, got, sum)
		}
	}
	unmount(t, fsMnt)

	// A read-only loop device on the by-volume name.
	dev := sh(t, "losetup", "-r", "-f", "--show", byVol)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	if got := sha256File(t, dev); got != want {
		t.Errorf("loop device %s on %s: sha256 %s, want %s", dev, byVol, got, want)
	}
	sh(t, "losetup", "-d", dev)

	// Writes of every kind are refused with EROFS.
	refusals := map[string]error{}
	if f, err := os.OpenFile(byID, os.O_WRONLY, 0); err == nil {
		f.Close()
		refusals["open for write"] = nil
	} else {
		refusals["open for write"] = err
	}
	if f, err := os.OpenFile(byVol, os.O_RDWR, 0); err == nil {
		f.Close()
		refusals["open read-write"] = nil
	} else {
		refusals["open read-write"] = err
	}
	refusals["truncate"] = os.Truncate(byID, 0)
	if f, err := os.Create(filepath.Join(m.dir, "by-id", "new.img")); err == nil {
		f.Close()
		refusals["create"] = nil
	} else {
		refusals["create"] = err
	}
	refusals["mkdir"] = os.Mkdir(filepath.Join(m.dir, "by-volume", "new"), 0o755)
	refusals["remove"] = os.Remove(byID)
	refusals["chmod"] = os.Chmod(byID, 0o644)
	for what, err := range refusals {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on the mount: %v, want EROFS", what, err)
		}
	}
	if got := fileSize(t, byID); got != 256*mib {
		t.Errorf("after refused writes %s is %d bytes", byID, got)
	}

	// Busy: `volback umount` refuses as umount(8) does; --lazy detaches,
	// warns and exits 0; the open file keeps reading correct bytes; the
	// server exits once it closes.
	f, err := os.Open(byID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, stderr, code := run(t, home, "umount", m.dir)
	assertRefused(t, "volback umount of a busy mount", stderr, code, "busy", "--lazy")
	if !mounted(m.dir) {
		t.Fatal("a refused volback umount unmounted the busy mount")
	}
	_, stderr, code = run(t, home, "umount", "--lazy", m.dir)
	if code != 0 {
		t.Fatalf("volback umount --lazy of a busy mount: exit %d: %s", code, stderr)
	}
	if mounted(m.dir) {
		t.Fatal("volback umount --lazy exited 0 but the mount is still in /proc/mounts")
	}
	if !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "lazily") {
		t.Errorf("umount --lazy of a busy mount: stderr %q, want a warning that it was detached lazily", stderr)
	}
	orig, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	compareRange(t, orig, f, 100*mib, 110*mib)
	f.Close()
	m.waitExit(t, "volback umount and closing the last file")
}

// TestMountDirectIO: `volback mount --direct-io` serves the same bytes as
// the page-cached mount while leaving nothing in the page cache after a
// read(2) pass (fincore), mmap(MAP_SHARED) of the image still works, and an
// ext4 image on it loop-mounts with its files intact.
func TestMountDirectIO(t *testing.T) {
	requireLoop(t)
	requireTool(t, "cmp")
	requireTool(t, "fincore")
	home := newHome(t)
	img := filepath.Join(home, "fs.img")
	files := map[string][]byte{
		"random.bin":    randomBytes(31, 5*mib+3),
		"dir/small.bin": randomBytes(32, 70*kib+1),
	}
	sums := ext4Image(t, img, 64*mib, files)
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	manage(t, home, "fs", img)
	b := showBackup(t, home, backupCreate(t, home, "fs").ID)

	m := startMount(t, home, "--cache-size", "64M", "--direct-io")
	// The mount says whether the kernel declined before it says it is ready.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(m.stderr.String(), "backups mounted at") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(m.stderr.String(), "--direct-io:") {
		t.Skipf("the kernel does not grant FUSE_DIRECT_IO_ALLOW_MMAP: %s", m.stderr.String())
	}
	byID := idFile(m.dir, b.ID)
	sh(t, "cmp", img, byID)
	if res := strings.TrimSpace(sh(t, "fincore", "--bytes", "--noheadings", "--output", "RES", byID)); res != "0" {
		t.Errorf("after reading %s with direct IO, %s bytes of it are in the page cache, want 0", byID, res)
	}

	f, err := os.Open(byID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap(MAP_SHARED, PROT_READ) of %s: %v", byID, err)
	}
	if !bytes.Equal(mem, want) {
		t.Errorf("mmap of %s: bytes differ from the image", byID)
	}
	unix.Munmap(mem)
	f.Close()

	fsMnt := loopMount(t, byID, true)
	for name, sum := range sums {
		if got := sha256File(t, filepath.Join(fsMnt, name)); got != sum {
			t.Errorf("file %s in the loop-mounted backup: sha256 %s, want %s", name, got, sum)
		}
	}
	unmount(t, fsMnt)
}

// TestMountListing: names, sizes and times of both trees; backups created
// and deleted by other volback processes while mounted (through the
// mount's catalog socket) appear and vanish without remounting; a handle
// open on a deleted (and garbage-collected) backup returns correct bytes or
// EIO, never wrong bytes; SIGTERM unmounts cleanly.
func TestMountListing(t *testing.T) {
	home := newHome(t)
	imgA, imgB := filepath.Join(home, "a.img"), filepath.Join(home, "b.img")
	randomFile(t, imgA, 6*mib, 31)
	randomFile(t, imgB, 12*mib+4*kib, 32) // not a whole number of chunks
	manage(t, home, "alpha", imgA)
	manage(t, home, "beta", imgB)
	var named Backup
	runJSON(t, home, &named, "backup-create", "--name", "nightly", "alpha")
	b1 := showBackup(t, home, named.ID)
	b2 := showBackup(t, home, backupCreate(t, home, "beta").ID) // no name: by-volume uses the id

	m := startMount(t, home, "--cache-size", "1M")
	for _, b := range []shownBackup{b1, b2} {
		for _, p := range []string{idFile(m.dir, b.ID), volumeFile(m.dir, b)} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("backup %s: %v", b.ID, err)
			}
			if fi.Size() != b.SizeBytes || fi.Mode().Perm() != 0o444 || !fi.Mode().IsRegular() {
				t.Errorf("%s: size %d mode %v, want %d and -r--r--r--", p, fi.Size(), fi.Mode(), b.SizeBytes)
			}
			if !fi.ModTime().Equal(b.CreatedAt) {
				t.Errorf("%s: mtime %v, want created_at %v", p, fi.ModTime(), b.CreatedAt)
			}
		}
	}
	if got, want := dirNames(t, filepath.Join(m.dir, "by-id")), []string{b1.ID + ".img", b2.ID + ".img"}; !sameSet(got, want) {
		t.Errorf("by-id lists %v, want %v", got, want)
	}
	if got := dirNames(t, filepath.Join(m.dir, "by-volume")); !sameSet(got, []string{"alpha", "beta"}) {
		t.Errorf("by-volume lists %v, want alpha and beta", got)
	}
	compareFiles(t, imgA, volumeFile(m.dir, b1), 6*mib)
	compareFiles(t, imgB, idFile(m.dir, b2.ID), 12*mib+4*kib)

	// Other volback processes go through the mount's socket.
	var list []Backup
	runJSON(t, home, &list, "backup-list")
	if len(list) != 2 {
		t.Fatalf("backup-list while mounted: %d backups, want 2", len(list))
	}
	writeRandom(t, imgA, 0, 1*mib, 33)
	b3 := showBackup(t, home, backupCreate(t, home, "alpha").ID)
	eventually(t, "a backup created while mounted shows in by-id", func() bool { return exists(idFile(m.dir, b3.ID)) })
	eventually(t, "and in by-volume", func() bool { return exists(volumeFile(m.dir, b3)) })
	compareFiles(t, imgA, idFile(m.dir, b3.ID), 6*mib)

	// Delete b2 (its chunks are its own) while a handle on it is open and
	// garbage-collect its packs; the handle must never return wrong bytes.
	f, err := os.Open(idFile(m.dir, b2.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, mib)
	if _, err := f.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	packsDir := filepath.Join(repoDir(home), "packs")
	before := len(filesUnder(t, packsDir))
	mustRun(t, home, "backup-delete", b2.ID)
	mustRun(t, home, "repo-gc")
	if after := len(filesUnder(t, packsDir)); after >= before {
		t.Errorf("%d packs before deleting a backup with chunks of its own, %d after: want its packs gone", before, after)
	}
	// Forget what the kernel cached, so reads reach the mount (whose
	// cache is 1 MiB: mostly the repository, where the packs are gone).
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted backup vanishes from by-id", func() bool { return !exists(idFile(m.dir, b2.ID)) })
	eventually(t, "and from by-volume", func() bool { return !exists(volumeFile(m.dir, b2)) })
	orig, err := os.ReadFile(imgB)
	if err != nil {
		t.Fatal(err)
	}
	var good, eio int
	buf := make([]byte, 256*kib)
	for off := int64(0); off < int64(len(orig)); off += int64(len(buf)) {
		n, err := f.ReadAt(buf, off)
		switch {
		case err == nil || err == io.EOF:
			if !bytes.Equal(buf[:n], orig[off:off+int64(n)]) {
				t.Fatalf("handle on a deleted backup returned wrong bytes at %d", off)
			}
			good++
		case errors.Is(err, syscall.EIO):
			eio++
		default:
			t.Fatalf("handle on a deleted backup at %d: %v, want bytes or EIO", off, err)
		}
	}
	t.Logf("handle on the deleted backup: %d ranges read correctly, %d EIO", good, eio)
	f.Close()

	// SIGTERM unmounts and exits 0.
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.waitExit(t, "SIGTERM")
}

// TestMountCorruptChunk flips bytes of one chunk inside a pack: reading
// that chunk's range through the mount fails with EIO and the mount logs
// the backup and the offset; every other range reads correctly.
func TestMountCorruptChunk(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(home, "vol.img")
	randomFile(t, img, 8*mib, 41)
	manage(t, home, "vol", img)
	b := backupCreate(t, home, "vol")
	packsDir := filepath.Join(repoDir(home), "packs")
	packs := filesUnder(t, packsDir)
	if len(packs) == 0 {
		t.Fatalf("no packs under %s", packsDir)
	}
	// Inside the first blob's payload (random data is stored raw).
	p := filepath.Join(packsDir, packs[0])
	os.Chmod(p, 0o644)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	flip := make([]byte, 16)
	if _, err := f.ReadAt(flip, 1000); err != nil {
		t.Fatal(err)
	}
	for i := range flip {
		flip[i] ^= 0xff
	}
	if _, err := f.WriteAt(flip, 1000); err != nil {
		t.Fatal(err)
	}
	f.Close()

	m := startMount(t, home)
	orig, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := os.Open(idFile(m.dir, b.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	const piece = 64 * kib // the chunk size
	var bad []int64
	buf := make([]byte, piece)
	for off := int64(0); off < int64(len(orig)); off += piece {
		_, err := mf.ReadAt(buf, off)
		switch {
		case err == nil:
			if !bytes.Equal(buf, orig[off:off+piece]) {
				t.Fatalf("wrong bytes at %d (read succeeded)", off)
			}
		case errors.Is(err, syscall.EIO):
			bad = append(bad, off)
		default:
			t.Fatalf("read at %d: %v, want bytes or EIO", off, err)
		}
	}
	if len(bad) != 1 {
		t.Fatalf("EIO at offsets %v, want exactly one 64 KiB chunk", bad)
	}
	re := regexp.MustCompile(regexp.QuoteMeta(b.ID) + `.*chunk at offset ` + strconv.FormatInt(bad[0], 10) + `\b`)
	eventually(t, "the mount logs the backup and offset of the bad chunk", func() bool {
		for _, line := range strings.Split(m.stderr.String(), "\n") {
			if re.MatchString(line) {
				return true
			}
		}
		return false
	})
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func sameSet(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// TestMountAsClient: when another process (serve) owns the catalog, the
// mount is its client: it lists through the socket and reads chunks straight
// from the repository with the locations the owner gave it.
func TestMountAsClient(t *testing.T) {
	requireRoot(t)
	requireTool(t, "cmp")
	home := newHome(t)
	img := filepath.Join(home, "vol.img")
	randomFile(t, img, 48*mib, 31)
	manage(t, home, "vol", img)
	b := backupCreate(t, home, "vol")
	start(t, home, "serve")
	eventually(t, "serve's socket", func() bool { return exists(socketPath(home)) })
	m := startMount(t, home)
	sh(t, "cmp", img, idFile(m.dir, b.ID))
	b2 := backupCreate(t, home, "vol") // through the owner, while the client mount runs
	eventually(t, "the new backup in the client mount", func() bool { return exists(idFile(m.dir, b2.ID)) })
	sh(t, "cmp", img, idFile(m.dir, b2.ID))
}
