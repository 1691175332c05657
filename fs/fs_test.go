package fs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---- fake Source ----

// pattern is the pseudo-random material all generated images are cut from;
// its odd length keeps 1 MiB requests from lining up with it.
var pattern = func() []byte {
	p := make([]byte, 1<<20+4093)
	rand.New(rand.NewSource(1)).Read(p)
	return p
}()

// genFill writes bytes [off, off+len(p)) of the generated image for seed.
func genFill(p []byte, off int64, seed int64) {
	pos := int((off + seed*7919) % int64(len(pattern)))
	for len(p) > 0 {
		n := copy(p, pattern[pos:])
		p = p[n:]
		pos = 0
	}
}

func genBytes(size, seed int64) []byte {
	b := make([]byte, size)
	genFill(b, 0, seed)
	return b
}

type fakeBackup struct {
	e    Entry
	data []byte // nil: generated from seed, no allocation
	seed int64
	// reads overlapping [errFrom, errTo) fail
	errFrom, errTo int64
}

type fakeSource struct {
	mu      sync.Mutex
	backups map[string]*fakeBackup
	listErr error

	lists    atomic.Int64 // Backups calls
	open     atomic.Int64 // images open now
	maxRead  atomic.Int64 // largest ReadAt seen
	lastRead atomic.Int64 // size of the latest ReadAt
}

func newFakeSource(bs ...*fakeBackup) *fakeSource {
	s := &fakeSource{backups: map[string]*fakeBackup{}}
	for _, b := range bs {
		s.add(b)
	}
	return s
}

func (s *fakeSource) add(b *fakeBackup) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.backups[b.e.ID] = b
}

func (s *fakeSource) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.backups, id)
}

func (s *fakeSource) Backups(ctx context.Context) ([]Entry, error) {
	s.lists.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listErr != nil {
		return nil, s.listErr
	}
	var es []Entry
	for _, b := range s.backups {
		es = append(es, b.e)
	}
	return es, nil
}

func (s *fakeSource) OpenImage(ctx context.Context, id string) (Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.backups[id]
	if b == nil {
		return nil, fmt.Errorf("backup %s: %w", id, os.ErrNotExist)
	}
	s.open.Add(1)
	return &fakeImage{b: b, src: s}, nil
}

type fakeImage struct {
	b      *fakeBackup
	src    *fakeSource
	closed atomic.Bool
}

var errInjected = errors.New("injected chunk read failure")

func (im *fakeImage) Size() int64 { return im.b.e.Size }

func (im *fakeImage) ReadAt(p []byte, off int64) (int, error) {
	if im.closed.Load() {
		return 0, errors.New("read after Close")
	}
	for m := im.src.maxRead.Load(); int64(len(p)) > m && !im.src.maxRead.CompareAndSwap(m, int64(len(p))); m = im.src.maxRead.Load() {
	}
	im.src.lastRead.Store(int64(len(p)))
	size := im.b.e.Size
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	if im.b.errTo > im.b.errFrom && off < im.b.errTo && off+int64(n) > im.b.errFrom {
		return 0, errInjected
	}
	if im.b.data != nil {
		copy(p[:n], im.b.data[off:])
	} else {
		genFill(p[:n], off, im.b.seed)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (im *fakeImage) Close() error {
	if im.closed.Swap(true) {
		return errors.New("closed twice")
	}
	im.src.open.Add(-1)
	return nil
}

// ---- helpers ----

// syncBuffer is a log sink the FUSE goroutines and the test share.
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

func requireFUSE(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("FUSE tests mount for real and need root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		tb.Skipf("FUSE tests need /dev/fuse: %v", err)
	}
}

// mountFake mounts src on a fresh directory and unmounts it at cleanup.
func mountFake(tb testing.TB, src Source) (*Server, string, *syncBuffer) {
	tb.Helper()
	return mountFakeWith(tb, src, Options{})
}

// mountFakeWith is mountFake with options; the logger is the test's.
func mountFakeWith(tb testing.TB, src Source, opt Options) (*Server, string, *syncBuffer) {
	tb.Helper()
	requireFUSE(tb)
	mp := tb.TempDir()
	logs := &syncBuffer{}
	opt.Logger = log.New(logs, "", 0)
	srv, err := Mount(mp, src, opt)
	if err != nil {
		tb.Fatalf("Mount: %v", err)
	}
	tb.Cleanup(func() {
		if mounted, _ := isMountpoint(mp); mounted {
			if err := srv.Unmount(); err != nil {
				tb.Errorf("cleanup: %v", err)
				_ = exec.Command("umount", "-l", mp).Run()
			}
		}
	})
	return srv, mp, logs
}

func inProcMounts(tb testing.TB, mp string) (bool, string) {
	tb.Helper()
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && unescapeMountinfo(f[1]) == mp {
			return true, line
		}
	}
	return false, ""
}

// eventually polls cond until it holds or limit passes.
func eventually(tb testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			tb.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return fmt.Sprintf("%x", h)
}

var (
	t1 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// not UTC and with nanoseconds: names use UTC, mtimes keep the nanoseconds
	t2 = time.Date(2026, 2, 3, 6, 5, 6, 789000000, time.FixedZone("EET", 2*3600))
	t3 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
)

func testBackups() []*fakeBackup {
	return []*fakeBackup{
		{e: Entry{ID: "11111111-aaaa-4000-8000-000000000001", Name: "daily", VolumeName: "vol-a", CreatedAt: t1, Size: 3<<20 + 123}, seed: 1},
		{e: Entry{ID: "22222222-bbbb-4000-8000-000000000002", Name: "daily", VolumeName: "vol-a", CreatedAt: t1, Size: 1 << 20}, seed: 2},
		{e: Entry{ID: "33333333-cccc-4000-8000-000000000003", Name: "", VolumeName: "vol/b", CreatedAt: t2, Size: 5000}, seed: 3},
		{e: Entry{ID: "44444444-dddd-4000-8000-000000000004", Name: "we/ird\x00name", VolumeName: "vol-a", CreatedAt: t3, Size: 0}, seed: 4},
	}
}

func dirNames(tb testing.TB, dir string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// ---- tests ----

func TestListing(t *testing.T) {
	bs := testBackups()
	src := newFakeSource(bs...)
	_, mp, _ := mountFake(t, src)

	if got, want := dirNames(t, mp), []string{"by-id", "by-volume"}; !slices.Equal(got, want) {
		t.Fatalf("root lists %q, want %q", got, want)
	}
	wantIDs := []string{
		"11111111-aaaa-4000-8000-000000000001.img", "22222222-bbbb-4000-8000-000000000002.img",
		"33333333-cccc-4000-8000-000000000003.img", "44444444-dddd-4000-8000-000000000004.img",
	}
	if got := dirNames(t, filepath.Join(mp, "by-id")); !slices.Equal(got, wantIDs) {
		t.Fatalf("by-id lists %q, want %q", got, wantIDs)
	}
	if got, want := dirNames(t, filepath.Join(mp, "by-volume")), []string{"vol-a", "vol_b"}; !slices.Equal(got, want) {
		t.Fatalf("by-volume lists %q, want %q", got, want)
	}
	// Same name and time: the lower id keeps the plain name, the other gets its id prefix.
	wantA := []string{
		"2026-01-02T03-04-05Z_daily.img",
		"2026-01-02T03-04-05Z_daily_22222222.img",
		"2026-03-01T00-00-00Z_we_ird_name.img",
	}
	if got := dirNames(t, filepath.Join(mp, "by-volume", "vol-a")); !slices.Equal(got, wantA) {
		t.Fatalf("by-volume/vol-a lists %q, want %q", got, wantA)
	}
	wantB := []string{"2026-02-03T04-05-06Z_33333333-cccc-4000-8000-000000000003.img"}
	if got := dirNames(t, filepath.Join(mp, "by-volume", "vol_b")); !slices.Equal(got, wantB) {
		t.Fatalf("by-volume/vol_b lists %q, want %q", got, wantB)
	}

	paths := map[string][2]string{
		bs[0].e.ID: {"by-id/" + wantIDs[0], "by-volume/vol-a/" + wantA[0]},
		bs[1].e.ID: {"by-id/" + wantIDs[1], "by-volume/vol-a/" + wantA[1]},
		bs[2].e.ID: {"by-id/" + wantIDs[2], "by-volume/vol_b/" + wantB[0]},
		bs[3].e.ID: {"by-id/" + wantIDs[3], "by-volume/vol-a/" + wantA[2]},
	}
	inos := map[uint64]string{}
	for _, b := range bs {
		var ino uint64
		for i, p := range paths[b.e.ID] {
			fi, err := os.Stat(filepath.Join(mp, p))
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Size() != b.e.Size {
				t.Errorf("%s: size %d, want %d", p, fi.Size(), b.e.Size)
			}
			if !fi.ModTime().Equal(b.e.CreatedAt) {
				t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), b.e.CreatedAt)
			}
			if ct := time.Unix(st.Ctim.Sec, st.Ctim.Nsec); !ct.Equal(b.e.CreatedAt) {
				t.Errorf("%s: ctime %v, want %v", p, ct, b.e.CreatedAt)
			}
			if fi.Mode() != 0o444 {
				t.Errorf("%s: mode %v, want -r--r--r--", p, fi.Mode())
			}
			if i == 0 {
				ino = st.Ino
			} else if st.Ino != ino {
				t.Errorf("%s: inode %d differs from by-id's %d", p, st.Ino, ino)
			}
			if st.Ino != backupIno(b.e.ID) {
				t.Errorf("%s: inode %d, want stable %d", p, st.Ino, backupIno(b.e.ID))
			}
		}
		if other, dup := inos[ino]; dup {
			t.Errorf("backups %s and %s share inode %d", other, b.e.ID, ino)
		}
		inos[ino] = b.e.ID
	}
	for _, d := range []string{"", "by-id", "by-volume", "by-volume/vol-a", "by-volume/vol_b"} {
		fi, err := os.Stat(filepath.Join(mp, d))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != os.ModeDir|0o555 {
			t.Errorf("/%s: mode %v, want dr-xr-xr-x", d, fi.Mode())
		}
	}
	for _, p := range []string{"by-id/nope.img", "by-id/11111111-aaaa-4000-8000-000000000001", "by-volume/vol-c", "by-volume/vol-a/x.img", "other"} {
		if _, err := os.Stat(filepath.Join(mp, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat %s: %v, want ENOENT", p, err)
		}
	}

	// An ls -l storm costs about one catalog query per second, not one per entry.
	before := src.lists.Load()
	for i := 0; i < 50; i++ {
		for _, d := range []string{"by-id", "by-volume/vol-a"} {
			ents, _ := os.ReadDir(filepath.Join(mp, d))
			for _, e := range ents {
				e.Info()
			}
		}
	}
	if n := src.lists.Load() - before; n > 3 {
		t.Errorf("50 listings called Source.Backups %d times, want it cached", n)
	}
}

func TestReadContent(t *testing.T) {
	bs := testBackups()
	src := newFakeSource(bs...)
	_, mp, logs := mountFake(t, src)

	for _, b := range bs {
		want := genBytes(b.e.Size, b.seed)
		p := filepath.Join(mp, "by-id", b.e.ID+".img")
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: content differs (got %d bytes sha %s, want %d bytes sha %s)", p, len(got), sha(got), len(want), sha(want))
		}
	}

	// Odd offsets and lengths, across the end too; O_DIRECT-free so the page
	// cache is exercised along with the server.
	b := bs[0]
	want := genBytes(b.e.Size, b.seed)
	f, err := os.Open(filepath.Join(mp, "by-volume", "vol-a", "2026-01-02T03-04-05Z_daily.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 300; i++ {
		off := rng.Int63n(b.e.Size + 10)
		n := 1 + rng.Intn(3<<20)
		if i%3 == 0 {
			n = 1 + rng.Intn(9000)
		}
		buf := make([]byte, n)
		got, err := f.ReadAt(buf, off)
		wantN := int(max(0, min(int64(n), b.e.Size-off)))
		if got != wantN {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; want %d bytes", n, off, got, err, wantN)
		}
		if wantN < n && err != io.EOF {
			t.Fatalf("ReadAt past the end at %d: err %v, want io.EOF", off, err)
		}
		if wantN == n && err != nil {
			t.Fatalf("ReadAt(%d at %d): %v", n, off, err)
		}
		if !bytes.Equal(buf[:got], want[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d bytes at %d): content differs", n, off)
		}
	}
	if s := logs.String(); s != "" {
		t.Errorf("unexpected log output: %s", s)
	}
}

func TestParallelReads(t *testing.T) {
	b := &fakeBackup{e: Entry{ID: "par", VolumeName: "v", CreatedAt: t1, Size: 32<<20 + 7}, seed: 9}
	_, mp, _ := mountFake(t, newFakeSource(b))
	want := genBytes(b.e.Size, b.seed)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			f, err := os.Open(filepath.Join(mp, "by-id", "par.img"))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			rng := rand.New(rand.NewSource(int64(g)))
			buf := make([]byte, 300_000)
			for i := 0; i < 40; i++ {
				off := rng.Int63n(b.e.Size - int64(len(buf)))
				if _, err := f.ReadAt(buf, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("reader %d: content differs at %d", g, off)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestBackupsComeAndGo(t *testing.T) {
	bs := testBackups()
	src := newFakeSource(bs[0])
	_, mp, _ := mountFake(t, src)
	byID := filepath.Join(mp, "by-id", bs[2].e.ID+".img")
	volDir := filepath.Join(mp, "by-volume", "vol_b")

	if _, err := os.Stat(byID); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("before adding: stat %v, want ENOENT", err)
	}
	src.add(bs[2])
	d := eventually(t, 2500*time.Millisecond, "new backup appears in by-id", func() bool {
		return slices.Contains(dirNames(t, filepath.Join(mp, "by-id")), bs[2].e.ID+".img")
	})
	t.Logf("new backup listed after %v", d)
	if !slices.Contains(dirNames(t, filepath.Join(mp, "by-volume")), "vol_b") {
		t.Fatal("new volume not in by-volume")
	}
	fi, err := os.Stat(byID)
	if err != nil || fi.Size() != bs[2].e.Size {
		t.Fatalf("stat new backup: %v, %v", fi, err)
	}

	// A handle opened before deletion keeps serving; Release closes the Image.
	f, err := os.Open(byID)
	if err != nil {
		t.Fatal(err)
	}
	src.remove(bs[2].e.ID)
	d = eventually(t, 2500*time.Millisecond, "deleted backup vanishes", func() bool {
		_, err1 := os.Stat(byID)
		_, err2 := os.Stat(volDir)
		return errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist) &&
			!slices.Contains(dirNames(t, filepath.Join(mp, "by-id")), bs[2].e.ID+".img") &&
			!slices.Contains(dirNames(t, filepath.Join(mp, "by-volume")), "vol_b")
	})
	t.Logf("deleted backup gone after %v", d)
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, genBytes(bs[2].e.Size, bs[2].seed)) {
		t.Fatalf("reading the deleted backup through an open handle: %d bytes, %v", len(got), err)
	}
	if n := src.open.Load(); n != 1 {
		t.Fatalf("%d images open with one handle open", n)
	}
	f.Close()
	eventually(t, 2*time.Second, "Release closes the image", func() bool { return src.open.Load() == 0 })
	if got := dirNames(t, filepath.Join(mp, "by-id")); !slices.Equal(got, []string{bs[0].e.ID + ".img"}) {
		t.Fatalf("by-id lists %q after the deletion", got)
	}
}

func TestListingError(t *testing.T) {
	src := newFakeSource(testBackups()...)
	_, mp, logs := mountFake(t, src)
	src.mu.Lock()
	src.listErr = errors.New("catalog unavailable")
	src.mu.Unlock()
	time.Sleep(listingTTL + 100*time.Millisecond)
	if _, err := os.ReadDir(filepath.Join(mp, "by-id")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("listing with a failing catalog: %v, want EIO", err)
	}
	if !strings.Contains(logs.String(), "catalog unavailable") {
		t.Fatalf("log does not name the failure: %q", logs.String())
	}
}

func TestReadError(t *testing.T) {
	const from, to = 1<<20 + 100, 1<<20 + 5000
	b := &fakeBackup{e: Entry{ID: "broken-backup", VolumeName: "v", CreatedAt: t1, Size: 4 << 20}, seed: 5, errFrom: from, errTo: to}
	src := newFakeSource(b)
	_, mp, logs := mountFake(t, src)
	want := genBytes(b.e.Size, b.seed)
	p := filepath.Join(mp, "by-id", "broken-backup.img")

	if _, err := os.ReadFile(p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("reading the whole image: %v, want EIO", err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for _, off := range []int64{1 << 20, from, to - 1, 1<<20 + 4096} { // pages overlapping the bad range
		if n, err := f.ReadAt(buf, off); !errors.Is(err, syscall.EIO) {
			t.Errorf("ReadAt(4096 at %d) = %d, %v; want EIO", off, n, err)
		}
	}
	for _, off := range []int64{0, 1<<20 - 4096, 1<<20 + 8192, 3 << 20, 4<<20 - 4096} { // pages outside it
		n, err := f.ReadAt(buf, off)
		if err != nil || n != len(buf) || !bytes.Equal(buf, want[off:off+4096]) {
			t.Errorf("ReadAt(4096 at %d) = %d, %v (content ok %v); want the data", off, n, err,
				n == len(buf) && bytes.Equal(buf, want[off:off+4096]))
		}
	}
	if s := logs.String(); !strings.Contains(s, "read backup broken-backup at offset") || !strings.Contains(s, errInjected.Error()) {
		t.Errorf("log does not name the backup, offset and cause: %q", s)
	}
}

func TestReadAhead(t *testing.T) {
	b := &fakeBackup{e: Entry{ID: "ra", VolumeName: "v", CreatedAt: t1, Size: 16 << 20}, seed: 6}
	src := newFakeSource(b)
	_, mp, _ := mountFake(t, src)
	var st syscall.Stat_t
	if err := syscall.Stat(mp, &st); err != nil {
		t.Fatal(err)
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	ra, err := os.ReadFile(p)
	if err != nil {
		t.Skipf("no bdi read-ahead to check: %v", err)
	}
	if strings.TrimSpace(string(ra)) != "1024" {
		t.Errorf("%s = %s, want 1024", p, ra)
	}
	// Sequential reads then reach the server as 1 MiB requests.
	if _, err := os.ReadFile(filepath.Join(mp, "by-id", "ra.img")); err != nil {
		t.Fatal(err)
	}
	if m := src.maxRead.Load(); m != maxIO {
		t.Errorf("largest request %d bytes, want %d", m, maxIO)
	}
}

func TestReadOnly(t *testing.T) {
	bs := testBackups()
	_, mp, _ := mountFake(t, newFakeSource(bs...))
	img := filepath.Join(mp, "by-id", bs[0].e.ID+".img")
	dir := filepath.Join(mp, "by-id")

	if ok, line := inProcMounts(t, mp); !ok || !slices.Contains(strings.Split(strings.Fields(line)[3], ","), "ro") {
		t.Fatalf("/proc/mounts: %q, want a ro mount", line)
	}
	checks := map[string]func() error{
		"open O_WRONLY": func() error { f, err := os.OpenFile(img, os.O_WRONLY, 0); f.Close(); return err },
		"open O_RDWR":   func() error { f, err := os.OpenFile(img, os.O_RDWR, 0); f.Close(); return err },
		"open O_TRUNC":  func() error { f, err := os.OpenFile(img, os.O_RDONLY|os.O_TRUNC, 0); f.Close(); return err },
		"truncate":      func() error { return os.Truncate(img, 0) },
		"create":        func() error { return os.WriteFile(filepath.Join(dir, "new.img"), []byte("x"), 0o644) },
		"mkdir":         func() error { return os.Mkdir(filepath.Join(mp, "by-volume", "new"), 0o755) },
		"mkdir in root": func() error { return os.Mkdir(filepath.Join(mp, "x"), 0o755) },
		"unlink":        func() error { return os.Remove(img) },
		"rmdir":         func() error { return os.Remove(filepath.Join(mp, "by-volume", "vol-a")) },
		"rename":        func() error { return os.Rename(img, filepath.Join(dir, "renamed.img")) },
		"symlink":       func() error { return os.Symlink("target", filepath.Join(dir, "link")) },
		"link":          func() error { return os.Link(img, filepath.Join(dir, "hard.img")) },
		"chmod":         func() error { return os.Chmod(img, 0o644) },
		"chtimes":       func() error { return os.Chtimes(img, time.Now(), time.Now()) },
		"mknod":         func() error { return syscall.Mknod(filepath.Join(dir, "fifo"), syscall.S_IFIFO|0o644, 0) },
		"setxattr":      func() error { return syscall.Setxattr(img, "user.x", []byte("y"), 0) },
	}
	for name, f := range checks {
		if err := f(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	got, err := os.ReadFile(img)
	if err != nil || !bytes.Equal(got, genBytes(bs[0].e.Size, bs[0].seed)) {
		t.Fatalf("image changed or unreadable after the refused writes: %v", err)
	}
	if names := dirNames(t, dir); len(names) != len(bs) {
		t.Fatalf("by-id lists %q after the refused changes", names)
	}
}

func waitReturns(t *testing.T, srv *Server) {
	t.Helper()
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Server.Wait did not return after unmount")
	}
}

func TestUnmount(t *testing.T) {
	requireFUSE(t)
	bs := testBackups()

	t.Run("Server.Unmount", func(t *testing.T) {
		srv, mp, _ := mountFake(t, newFakeSource(bs...))
		if ok, _ := inProcMounts(t, mp); !ok {
			t.Fatal("mount not in /proc/mounts")
		}
		if err := srv.Unmount(); err != nil {
			t.Fatal(err)
		}
		waitReturns(t, srv)
		if ok, line := inProcMounts(t, mp); ok {
			t.Fatalf("still in /proc/mounts: %s", line)
		}
		if names := dirNames(t, mp); len(names) != 0 {
			t.Fatalf("mountpoint not empty after unmount: %q", names)
		}
	})

	t.Run("Unmount", func(t *testing.T) {
		srv, mp, _ := mountFake(t, newFakeSource(bs...))
		if err := Unmount(mp, false); err != nil {
			t.Fatal(err)
		}
		waitReturns(t, srv)
		if ok, line := inProcMounts(t, mp); ok {
			t.Fatalf("still in /proc/mounts: %s", line)
		}
		err := Unmount(mp, false)
		if err == nil || !strings.Contains(err.Error(), "not mounted") {
			t.Fatalf("Unmount of an unmounted dir: %v, want 'not mounted'", err)
		}
	})

	t.Run("busy", func(t *testing.T) {
		src := newFakeSource(bs...)
		srv, mp, _ := mountFake(t, src)
		f, err := os.Open(filepath.Join(mp, "by-id", bs[0].e.ID+".img"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		err = srv.Unmount()
		if err == nil || !strings.Contains(err.Error(), "losetup -a") {
			t.Fatalf("Server.Unmount of a busy mount: %v, want a refusal that says what to do", err)
		}
		// As umount(8): busy is refused, and the mount stays.
		err = Unmount(mp, false)
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "--lazy") {
			t.Fatalf("Unmount of a busy mount: %v, want ErrBusy naming --lazy", err)
		}
		if ok, _ := inProcMounts(t, mp); !ok {
			t.Fatal("a refused Unmount of a busy mount unmounted it")
		}
		err = Unmount(mp, true)
		if !errors.Is(err, ErrLazyUnmount) {
			t.Fatalf("Unmount of a busy mount: %v, want ErrLazyUnmount", err)
		}
		t.Log(err)
		if ok, line := inProcMounts(t, mp); ok {
			t.Fatalf("still in /proc/mounts after lazy unmount: %s", line)
		}
		got, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(got, genBytes(bs[0].e.Size, bs[0].seed)) {
			t.Fatalf("open handle after lazy unmount: %d bytes, %v", len(got), err)
		}
		f.Close()
		waitReturns(t, srv)
		eventually(t, 2*time.Second, "image closed", func() bool { return src.open.Load() == 0 })
	})
}

func TestMountpointChecks(t *testing.T) {
	requireFUSE(t)
	src := newFakeSource(testBackups()...)
	base := t.TempDir()
	file := filepath.Join(base, "file")
	full := filepath.Join(base, "full")
	os.WriteFile(file, nil, 0o644)
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	_, mounted, _ := mountFake(t, src)

	for _, c := range []struct{ path, want string }{
		{filepath.Join(base, "missing"), "does not exist; create it with `mkdir -p"},
		{file, "is not a directory"},
		{full, "is not empty"},
		{mounted, "already a mount point"},
	} {
		srv, err := Mount(c.path, src, Options{})
		if err == nil {
			srv.Unmount()
			t.Errorf("Mount(%s) succeeded", c.path)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("Mount(%s): %v, want it to name the path and say %q", c.path, err, c.want)
		}
	}
}

// TestExt4LoopMount serves a real ext4 image and loop-mounts it through the
// FUSE mount, the way users restore single files.
// TestExt4LoopMount loop-mounts an ext4 image from the mount, page-cached
// and with direct IO: the loop driver reads its backing file with
// read_iter, which direct IO sends to the server as it comes.
func TestExt4LoopMount(t *testing.T) {
	t.Run("page-cache", func(t *testing.T) { testExt4LoopMount(t, Options{}) })
	t.Run("direct-io", func(t *testing.T) { testExt4LoopMount(t, Options{DirectIO: true}) })
}

func testExt4LoopMount(t *testing.T, opt Options) {
	requireFUSE(t)
	for _, tool := range []string{"mkfs.ext4", "losetup", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	work := t.TempDir()
	img := filepath.Join(work, "ext4.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-F", "-q", img)

	// Write known files into it.
	rng := rand.New(rand.NewSource(42))
	files := map[string][]byte{
		"a.bin":          make([]byte, 5<<20),
		"notes.txt":      []byte("volback ext4 loop test\n"),
		"sub/dir/c.bin":  make([]byte, 1<<20+17),
		"sub/empty.file": {},
	}
	rng.Read(files["a.bin"])
	rng.Read(files["sub/dir/c.bin"])
	fsDir := filepath.Join(work, "fs")
	os.Mkdir(fsDir, 0o755)
	run(t, "mount", "-o", "loop", img, fsDir)
	t.Cleanup(func() { umountIfMounted(t, fsDir) })
	for name, data := range files {
		p := filepath.Join(fsDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "umount", fsDir)

	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackup{e: Entry{ID: "ext4-backup-id", Name: "fs", VolumeName: "ext4vol", CreatedAt: t1, Size: int64(len(data))}, data: data}
	srv, mp, logs := mountFakeWith(t, newFakeSource(b), opt)
	if srv.DirectIO() != opt.DirectIO {
		t.Skipf("direct IO %v, asked %v: the kernel does not grant FUSE_DIRECT_IO_ALLOW_MMAP", srv.DirectIO(), opt.DirectIO)
	}
	served := filepath.Join(mp, "by-id", "ext4-backup-id.img")

	loopDir := filepath.Join(work, "loop")
	os.Mkdir(loopDir, 0o755)
	run(t, "mount", "-o", "loop,ro", served, loopDir)
	t.Cleanup(func() { umountIfMounted(t, loopDir) })
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(loopDir, name))
		if err != nil {
			t.Fatalf("reading %s from the loop-mounted backup: %v", name, err)
		}
		if sha(got) != sha(want) {
			t.Errorf("%s: sha256 %s, want %s", name, sha(got), sha(want))
		}
	}
	run(t, "umount", loopDir)

	// losetup -r on the by-volume path: the block device reads back the exact image.
	dev := run(t, "losetup", "-r", "-f", "--show", filepath.Join(mp, "by-volume", "ext4vol", "2026-01-02T03-04-05Z_fs.img"))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatalf("reading %s: %v", dev, err)
	}
	if sha(got) != sha(data) {
		t.Fatalf("%s: sha256 %s, want the image's %s", dev, sha(got), sha(data))
	}
	run(t, "losetup", "-d", dev)
	if s := logs.String(); s != "" {
		t.Errorf("unexpected log output: %s", s)
	}
}

// TestDirectIO: with Options.DirectIO on a kernel that grants
// FUSE_DIRECT_IO_ALLOW_MMAP, read(2) reaches the server as the caller asked
// (not widened to pages by the page cache), and mmap(MAP_SHARED) of an
// image still works and shows its bytes. Without DirectIO, both hold as
// before: page-aligned requests, mmap works.
func TestDirectIO(t *testing.T) {
	b := &fakeBackup{e: Entry{ID: "dio", VolumeName: "v", CreatedAt: t1, Size: 5<<20 + 333}, seed: 12}
	want := genBytes(b.e.Size, b.seed)
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			src := newFakeSource(b)
			srv, mp, logs := mountFakeWith(t, src, Options{DirectIO: direct})
			if srv.DirectIO() != direct {
				t.Skipf("direct IO %v, asked %v: the kernel does not grant FUSE_DIRECT_IO_ALLOW_MMAP", srv.DirectIO(), direct)
			}
			f, err := os.Open(filepath.Join(mp, "by-id", "dio.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()

			// An odd read in the middle: with direct IO the server sees
			// exactly it; through the page cache, whole pages.
			const off, n = 3<<20 + 12345, 5000
			buf := make([]byte, n)
			if _, err := f.ReadAt(buf, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, want[off:off+n]) {
				t.Fatalf("pread(%d at %d): content differs", n, off)
			}
			if got := src.lastRead.Load(); direct != (got == n) {
				t.Errorf("pread of %d bytes reached the server as %d bytes (direct IO %v)", n, got, direct)
			}

			m, err := unix.Mmap(int(f.Fd()), 0, int(b.e.Size), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				t.Fatalf("mmap(MAP_SHARED, PROT_READ): %v", err)
			}
			defer unix.Munmap(m)
			if !bytes.Equal(m, want) {
				i := 0
				for i < len(m) && m[i] == want[i] {
					i++
				}
				t.Fatalf("mmap: content differs from byte %d", i)
			}
			if s := logs.String(); s != "" {
				t.Errorf("unexpected log output: %s", s)
			}
		})
	}
}

func umountIfMounted(t *testing.T, dir string) {
	if ok, _ := inProcMounts(t, dir); ok {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("cleanup umount %s: %v %s; detaching lazily", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	}
}

// BenchmarkSequentialRead reads a 1 GiB generated image through the mount
// with 1 MiB reads from a cold page cache.
func BenchmarkSequentialRead(b *testing.B) {
	const size = 1 << 30
	bk := &fakeBackup{e: Entry{ID: "big", VolumeName: "v", CreatedAt: t1, Size: size}, seed: 11}
	src := newFakeSource(bk)
	_, mp, _ := mountFake(b, src)
	p := filepath.Join(mp, "by-id", "big.img")
	buf := make([]byte, 1<<20)
	first, last := make([]byte, 1<<20), make([]byte, 1<<20)
	genFill(first, 0, bk.seed)
	genFill(last, size-1<<20, bk.seed)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			b.Logf("cannot drop caches (%v): numbers may come from the page cache", err)
		}
		b.StartTimer()
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		var total int64
		for {
			n, err := io.ReadFull(f, buf)
			if total == 0 && !bytes.Equal(buf[:n], first) || total == size-1<<20 && !bytes.Equal(buf[:n], last) {
				b.Fatalf("content differs at %d", total)
			}
			total += int64(n)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
		if total != size {
			b.Fatalf("read %d bytes, want %d", total, size)
		}
	}
	b.ReportMetric(float64(src.maxRead.Load()>>10), "KiB/max-request")
}

// BenchmarkFakeImage is the ceiling: the fake source's own ReadAt speed.
func BenchmarkFakeImage(b *testing.B) {
	im := &fakeImage{b: &fakeBackup{e: Entry{Size: 1 << 30}, seed: 11}, src: newFakeSource()}
	buf := make([]byte, 1<<20)
	b.SetBytes(1 << 30)
	for i := 0; i < b.N; i++ {
		for off := int64(0); off < 1<<30; off += 1 << 20 {
			im.ReadAt(buf, off)
		}
	}
}

// TestHelperMount is the child process of TestStaleMount: it mounts and
// serves until killed.
func TestHelperMount(t *testing.T) {
	mp := os.Getenv("VOLBACK_FS_HELPER_MOUNTPOINT")
	if mp == "" {
		t.Skip("helper process for TestStaleMount")
	}
	srv, err := Mount(mp, newFakeSource(testBackups()...), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Mount returns after go-fuse's start-up poll of its own mount; a kill
	// before that would leave this process stuck closing a file on its own
	// dead mount, so the parent waits for this line before killing.
	fmt.Println("helper: serving")
	srv.Wait()
}

// TestStaleMount: a mount whose server was killed (-9) is refused as a
// mountpoint with advice, and Unmount clears it.
func TestStaleMount(t *testing.T) {
	requireFUSE(t)
	mp := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMount$", "-test.v")
	cmd.Env = append(os.Environ(), "VOLBACK_FS_HELPER_MOUNTPOINT="+mp)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "helper: serving") {
				close(serving)
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if ok, _ := inProcMounts(t, mp); ok {
			exec.Command("umount", "-l", mp).Run()
		}
	})
	select {
	case <-serving:
	case <-time.After(10 * time.Second):
		t.Fatal("helper did not start serving")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.ReadDir(mp); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("listing a dead mount: %v, want ENOTCONN", err)
	}
	_, err = Mount(mp, newFakeSource(), Options{})
	if err == nil || !strings.Contains(err.Error(), "not connected") || !strings.Contains(err.Error(), "volback umount "+mp) {
		t.Fatalf("Mount on a stale mount: %v, want advice to run volback umount", err)
	}
	if err := Unmount(mp, false); err != nil {
		t.Fatalf("Unmount of a stale mount: %v", err)
	}
	if ok, line := inProcMounts(t, mp); ok {
		t.Fatalf("still in /proc/mounts: %s", line)
	}
	srv, err := Mount(mp, newFakeSource(testBackups()...), Options{})
	if err != nil {
		t.Fatalf("remount after clearing the stale mount: %v", err)
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
}

// sliceSource serves fakeImages that are SliceReaders: reads come back as
// 5000-byte slices of fresh buffers, and held counts the reads not released.
type sliceSource struct {
	*fakeSource
	held, reads atomic.Int64
}

func (s *sliceSource) OpenImage(ctx context.Context, id string) (Image, error) {
	im, err := s.fakeSource.OpenImage(ctx, id)
	if err != nil {
		return nil, err
	}
	return &sliceImage{fakeImage: im.(*fakeImage), src: s}, nil
}

type sliceImage struct {
	*fakeImage
	src *sliceSource
}

func (im *sliceImage) ReadSlices(off int64, n int) ([][]byte, func(), error) {
	p := make([]byte, n)
	got, err := im.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return nil, func() {}, err
	}
	var vecs [][]byte
	for b := p[:got]; len(b) > 0; {
		k := min(len(b), 5000)
		vecs = append(vecs, b[:k])
		b = b[k:]
	}
	im.src.held.Add(1)
	im.src.reads.Add(1)
	var once sync.Once
	return vecs, func() { once.Do(func() { im.src.held.Add(-1) }) }, err
}

// TestReadSlices: with a SliceReader image, Read replies from its slices
// (writev) with the right bytes, turns errors into EIO, and releases every
// read it took.
func TestReadSlices(t *testing.T) {
	const from, to = 1<<20 + 100, 1<<20 + 5000
	b := &fakeBackup{e: Entry{ID: "sliced", VolumeName: "v", CreatedAt: t1, Size: 3<<20 + 123}, seed: 9}
	bad := &fakeBackup{e: Entry{ID: "sliced-broken", VolumeName: "v", CreatedAt: t2, Size: 2 << 20}, seed: 10, errFrom: from, errTo: to}
	src := &sliceSource{fakeSource: newFakeSource(b, bad)}
	_, mp, logs := mountFake(t, src)
	got, err := os.ReadFile(filepath.Join(mp, "by-id", "sliced.img"))
	if err != nil || !bytes.Equal(got, genBytes(b.e.Size, b.seed)) {
		t.Fatalf("read: %v (%d bytes, content ok %v)", err, len(got), bytes.Equal(got, genBytes(b.e.Size, b.seed)))
	}
	if _, err := os.ReadFile(filepath.Join(mp, "by-id", "sliced-broken.img")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("broken image: %v, want EIO", err)
	}
	if src.reads.Load() == 0 {
		t.Fatal("ReadSlices was not used")
	}
	eventually(t, 5*time.Second, "every read released", func() bool { return src.held.Load() == 0 })
	if s := logs.String(); !strings.Contains(s, "read backup sliced-broken at offset") {
		t.Errorf("log does not name the failed read: %q", s)
	}
}
