package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketPath is where the catalog's owner answers (service.SocketPath).
func socketPath(home string) string { return filepath.Join(home, "run", "volback.sock") }

// lockHolder is the pid in the catalog's lock file: the process that owns
// the catalog (or last did).
func lockHolder(t *testing.T, home string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(home, "catalog", "volback.lock"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// startServe runs `volback serve` and waits until it answers.
func startServe(t *testing.T, home string) *exec.Cmd {
	t.Helper()
	cmd := start(t, home, "serve")
	eventually(t, "serve's socket", func() bool { return exists(socketPath(home)) })
	if got := lockHolder(t, home); got != cmd.Process.Pid {
		t.Fatalf("catalog lock held by pid %d, want serve (pid %d)", got, cmd.Process.Pid)
	}
	return cmd
}

// volbackResult is one finished volback process.
type volbackResult struct {
	stdout, stderr string
	code           int
}

// runAs runs volback without failing the test (safe from any goroutine);
// attr, when set, runs it as another user (then bin must be executable by
// that user: see executableByAll).
func runAs(home string, attr *syscall.SysProcAttr, args ...string) volbackResult {
	return runBin(bin, home, attr, args...)
}

func runBin(bin, home string, attr *syscall.SysProcAttr, args ...string) volbackResult {
	cmd := exec.Command(bin, append([]string{"--home", home}, args...)...)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = attr
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := volbackResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.code, r.stderr = -1, err.Error()
	}
	return r
}

// TestParallelClientsFreshHome: many volback invocations at once on a home
// that does not exist yet. One becomes the owner, the others its clients;
// owners leave while clients connect, and every call still succeeds.
func TestParallelClientsFreshHome(t *testing.T) {
	const clients, rounds = 40, 5
	failures := 0
	for round := range rounds {
		home := filepath.Join(newHome(t), "home")
		var wg sync.WaitGroup
		results := make([]volbackResult, clients)
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = runAs(home, nil, "-f", "json", "list")
			}()
		}
		wg.Wait()
		for i, r := range results {
			var vols []json.RawMessage
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &vols) != nil {
				failures++
				t.Errorf("round %d, client %d: exit %d, stdout %q, stderr %s", round, i, r.code, r.stdout, r.stderr)
			}
		}
		if exists(socketPath(home)) {
			t.Errorf("round %d: %s left behind after every owner exited", round, socketPath(home))
		}
	}
	t.Logf("%d parallel clients x %d rounds on fresh homes: %d failures", clients, rounds, failures)
}

// startCapture starts volback in the background with its stderr kept.
func startCapture(t *testing.T, home string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--home", home}, args...)...)
	cmd.Env = cleanEnv()
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, stderr
}

// slowHome is a home whose backups take seconds (one worker, a high zstd
// level on random data), with a managed 256 MiB volume "vol".
func slowHome(t *testing.T) string {
	t.Helper()
	home := newHome(t)
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte("workers = 1\ncompression_level = 12\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(home, "vol.img")
	randomFile(t, img, 256*mib, 51)
	manage(t, home, "vol", img)
	return home
}

// waitCreating polls backup-list until the backup named name is creating.
func waitCreating(t *testing.T, home, name string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var list []Backup
		runJSON(t, home, &list, "backup-list")
		for _, b := range list {
			if b.Name == name && b.Status == "creating" {
				return
			}
			if b.Name == name {
				t.Fatalf("backup %s is %s before the owner was stopped; the test needs it creating", name, b.Status)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("backup %s did not start within 20s", name)
}

// TestOwnerKilledDuringClientBackup: a client's backup-create runs in the
// owner (serve). kill -9 of the owner: the client cannot know whether the
// backup finished, says so and exits 1; by then recovery has made the
// unfinished backup error. SIGTERM of the owner: it finishes the accepted
// backup before exiting, and the client succeeds.
func TestOwnerKilledDuringClientBackup(t *testing.T) {
	requireRoot(t)
	t.Run("kill -9", func(t *testing.T) {
		home := slowHome(t)
		owner := startServe(t, home)
		client, stderr := startCapture(t, home, "-f", "json", "backup-create", "--name", "during", "vol")
		waitCreating(t, home, "during")
		owner.Process.Signal(syscall.SIGKILL)
		owner.Wait()
		err := client.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("client backup-create after its owner was killed: %v, want exit status 1", err)
		}
		t.Logf("client: %s", stderr)
		assertRefused(t, "backup-create whose owner was killed", stderr.String(), 1,
			"backup-create", fmt.Sprintf("pid %d", owner.Process.Pid), "unknown", "error", "backup-list")
		var list []Backup
		runJSON(t, home, &list, "backup-list")
		if len(list) != 1 || list[0].Name != "during" || list[0].Status != "error" {
			t.Fatalf("backups after the owner was killed mid-backup: %+v, want one: during, error", list)
		}
		repoCheck(t, home)
	})
	t.Run("SIGTERM", func(t *testing.T) {
		home := slowHome(t)
		owner := startServe(t, home)
		client, stderr := startCapture(t, home, "-f", "json", "backup-create", "--name", "during", "vol")
		waitCreating(t, home, "during")
		owner.Process.Signal(syscall.SIGTERM)
		if err := client.Wait(); err != nil {
			t.Fatalf("client backup-create while its owner stopped gracefully: %v, want success\n%s", err, stderr)
		}
		if err := owner.Wait(); err != nil {
			t.Errorf("serve after SIGTERM: %v, want exit status 0", err)
		}
		var list []Backup
		runJSON(t, home, &list, "backup-list")
		if len(list) != 1 || list[0].Status != "available" {
			t.Fatalf("backups after the owner stopped gracefully: %+v, want one available", list)
		}
	})
}

// TestMountFollowsOwner: a mount started as a client keeps working when
// its owner exits. SIGTERM of the owner, another serve takes over: the
// mount follows it. kill -9 of that one: the mount takes the catalog over
// and serves the others itself. Throughout, an image opened at the start
// reads byte-exact, and backups made later show up and read byte-exact.
func TestMountFollowsOwner(t *testing.T) {
	home := newHome(t)
	img := filepath.Join(home, "vol.img")
	randomFile(t, img, 24*mib, 61)
	first, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	manage(t, home, "vol", img)
	b1 := backupCreate(t, home, "vol")
	a := startServe(t, home)
	m := startMount(t, home, "--cache-size", "1M") // mostly read from the repository
	if got := lockHolder(t, home); got != a.Process.Pid {
		t.Fatalf("catalog held by pid %d after the mount started, want serve (%d): the mount should be a client", got, a.Process.Pid)
	}
	f, err := os.Open(idFile(m.dir, b1.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	readsSame := func(when string) {
		t.Helper()
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(first))
		if _, err := f.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatalf("%s: reading the image opened at the start: %v", when, err)
		}
		if !bytes.Equal(got, first) {
			t.Fatalf("%s: the image opened at the start reads different bytes", when)
		}
	}
	readsSame("with the first owner")

	// SIGTERM: serve exits cleanly; a new serve owns the catalog and the
	// mount follows it.
	a.Process.Signal(syscall.SIGTERM)
	if err := a.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM with a client mount: %v", err)
	}
	readsSame("after its owner exited")
	b := startServe(t, home)
	writeRandom(t, img, 0, mib, 62)
	b2 := backupCreate(t, home, "vol")
	eventually(t, "a backup made through the new owner shows in the mount", func() bool { return exists(idFile(m.dir, b2.ID)) })
	compareFiles(t, img, idFile(m.dir, b2.ID), 24*mib)
	if got := lockHolder(t, home); got != b.Process.Pid {
		t.Fatalf("catalog held by pid %d, want the second serve (%d): the mount should have followed it", got, b.Process.Pid)
	}
	readsSame("following the second owner")

	// kill -9: nobody owns the catalog until the mount needs it.
	b.Process.Signal(syscall.SIGKILL)
	b.Wait()
	eventually(t, "the mount takes the catalog over", func() bool {
		os.ReadDir(filepath.Join(m.dir, "by-id"))
		return lockHolder(t, home) == m.cmd.Process.Pid
	})
	readsSame("owning the catalog itself")
	writeRandom(t, img, 2*mib, mib, 63)
	b3 := backupCreate(t, home, "vol") // a client of the mount now
	eventually(t, "a backup made through the mount shows in it", func() bool { return exists(idFile(m.dir, b3.ID)) })
	compareFiles(t, img, idFile(m.dir, b3.ID), 24*mib)
	readsSame("at the end")
	f.Close()
	for _, w := range []string{fmt.Sprintf("owner (pid %d) is gone; following the new owner (pid %d)", a.Process.Pid, b.Process.Pid),
		fmt.Sprintf("owner (pid %d) is gone; this process owns the catalog now", b.Process.Pid)} {
		if !strings.Contains(m.stderr.String(), w) {
			t.Errorf("the mount's log does not say %q", w)
		}
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.waitExit(t, "SIGTERM")
	if exists(socketPath(home)) {
		t.Error("the mount left its socket behind")
	}
}

// TestLongHomeSocket: with a home path too long for a socket address the
// socket still lives in the home's private run/ directory, and clients
// reach the owner there.
func TestLongHomeSocket(t *testing.T) {
	requireRoot(t)
	home := filepath.Join(newHome(t), strings.Repeat("a-rather-long-directory-name-", 5))
	if len(socketPath(home)) < 108 {
		t.Fatalf("test home %s is not too long for a socket address", home)
	}
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "volback-*"))
	owner := startServe(t, home)
	var vols []Volume
	runJSON(t, home, &vols, "list")
	if got := lockHolder(t, home); got != owner.Process.Pid {
		t.Fatalf("catalog held by pid %d, want serve (%d)", got, owner.Process.Pid)
	}
	checkModeOf(t, filepath.Join(home, "run"), os.ModeDir|0o700)
	checkModeOf(t, socketPath(home), os.ModeSocket|0o600)
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "volback-*"))
	if len(after) > len(before) {
		t.Errorf("new entries in the temp directory: %v (before: %v)", after, before)
	}
	owner.Process.Signal(syscall.SIGTERM)
	if err := owner.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v", err)
	}
}

func checkModeOf(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != want {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
	}
}

// TestSocketModeFromCreation watches (inotify) the socket directory and
// the socket appear, under umask 0, and looks at each at once: the
// directory is 0700 and the socket 0600 from the moment they exist, not
// only after a later chmod.
func TestSocketModeFromCreation(t *testing.T) {
	requireRoot(t)
	const tries = 25
	for i := range tries {
		home := newHome(t)
		// The directory, made by the first owner.
		mode := watchCreate(t, home, "run", func() { mustRunUmask0(t, home, "list") })
		if mode != os.ModeDir|0o700 {
			t.Fatalf("try %d: %s appeared with mode %v, want drwx------", i, filepath.Join(home, "run"), mode)
		}
		// The socket, made by each owner.
		var owner *exec.Cmd
		mode = watchCreate(t, filepath.Join(home, "run"), "volback.sock", func() {
			owner = exec.Command("sh", "-c", `umask 000; exec "$0" --home "$1" serve`, bin, home)
			owner.Env = cleanEnv()
			if err := owner.Start(); err != nil {
				t.Fatal(err)
			}
		})
		owner.Process.Signal(syscall.SIGTERM)
		owner.Wait()
		if mode != os.ModeSocket|0o600 {
			t.Fatalf("try %d: %s appeared with mode %v, want srw-------", i, socketPath(home), mode)
		}
	}
}

func mustRunUmask0(t *testing.T, home string, args ...string) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", `umask 000; exec "$@"`, "sh", bin, "--home", home}, args...)...)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("volback %v under umask 0: %v\n%s", args, err, out)
	}
}

// watchCreate runs do and returns the mode that dir/name had when inotify
// reported its creation.
func watchCreate(t *testing.T, dir, name string, do func()) os.FileMode {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE); err != nil {
		t.Fatal(err)
	}
	do()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 1000); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if string(bytes.TrimRight(raw, "\x00")) != name {
				continue
			}
			fi, err := os.Lstat(filepath.Join(dir, name))
			if err != nil {
				t.Fatalf("%s vanished right after it was created: %v", filepath.Join(dir, name), err)
			}
			return fi.Mode()
		}
	}
	t.Fatalf("%s was not created within 20s", filepath.Join(dir, name))
	return 0
}

const nobody = 65534

// executableByAll copies a program into a directory every user can enter
// (the build directories are root's, 0700), for running it as another user.
func executableByAll(t *testing.T, path string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vbx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, filepath.Base(path))
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// asNobody runs a process as uid 65534; with dacOverride it may enter
// root's private directories (as a process with CAP_DAC_OVERRIDE could),
// which is what it takes to reach root's socket at all.
func asNobody(dacOverride bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if dacOverride {
		a.AmbientCaps = []uintptr{unix.CAP_DAC_OVERRIDE}
	}
	return a
}

// fakeOwnerEnv makes the test binary a fake catalog owner listening on the
// socket it names (see TestMain): another user's process answering
// volback's calls with made-up volumes.
const fakeOwnerEnv = "VOLBACK_TEST_FAKE_OWNER"

// runFakeOwner listens on sock and answers every call with a fake volume.
func runFakeOwner(sock string) int {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake owner:", err)
		return 1
	}
	fmt.Println("listening")
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		fmt.Fprintln(w, `{"result":[{"id":"fake-volume","name":"fake","status":"available"}]}`)
	}))
	return 0
}

// startFakeOwner runs the fake owner as uid 65534 on home's socket.
func startFakeOwner(t *testing.T, home string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(executableByAll(t, os.Args[0]), "-test.run=^$")
	cmd.Env = append(cleanEnv(), fakeOwnerEnv+"="+socketPath(home))
	cmd.SysProcAttr = asNobody(true)
	startHelper(t, "fake owner", cmd, "listening\n")
	return cmd
}

// TestForeignSocketRefused: another user (uid 65534) got in first. A
// socket directory it made, a socket it made, and a process of it
// listening on a socket file that is root's are each refused with a clear
// error; nothing is opened and no fake answer is printed.
func TestForeignSocketRefused(t *testing.T) {
	requireRoot(t)
	t.Run("directory", func(t *testing.T) {
		home := newHome(t)
		// A home others can write to (a shared directory): uid 65534 makes run/.
		if err := os.Chmod(home, 0o777); err != nil {
			t.Fatal(err)
		}
		mkdir := exec.Command("mkdir", "-m", "700", filepath.Join(home, "run"))
		mkdir.SysProcAttr = asNobody(false)
		if out, err := mkdir.CombinedOutput(); err != nil {
			t.Fatalf("mkdir as uid %d: %v\n%s", nobody, err, out)
		}
		r := runAs(home, nil, "-f", "json", "list")
		t.Logf("refused: %s", r.stderr)
		assertRefused(t, "list with a socket directory of uid 65534", r.stderr, r.code,
			"socket directory "+filepath.Join(home, "run"), "uid 65534", "remove it")
		if r.stdout != "" || exists(filepath.Join(home, "catalog")) {
			t.Errorf("the refused list printed %q or opened the catalog", r.stdout)
		}
	})
	for _, c := range []struct {
		name     string
		rootFile bool // the socket file is root's, only the listener is not
		words    []string
	}{
		{"socket", false, []string{"socket " + "%s", "uid 65534", "remove"}},
		{"listener", true, []string{"answering on %s", "runs as uid 65534", "refusing to trust"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			home := newHome(t)
			if err := os.Mkdir(filepath.Join(home, "run"), 0o700); err != nil {
				t.Fatal(err)
			}
			fake := startFakeOwner(t, home)
			if c.rootFile {
				if err := os.Lchown(socketPath(home), 0, 0); err != nil {
					t.Fatal(err)
				}
			}
			r := runAs(home, nil, "-f", "json", "list")
			t.Logf("refused: %s", r.stderr)
			var words []string
			for _, w := range c.words {
				words = append(words, strings.ReplaceAll(w, "%s", socketPath(home)))
			}
			if c.rootFile {
				words = append(words, fmt.Sprintf("pid %d", fake.Process.Pid))
			}
			assertRefused(t, "list with a fake owner of uid 65534", r.stderr, r.code, words...)
			if r.stdout != "" || strings.Contains(r.stderr, "fake-volume") || exists(filepath.Join(home, "catalog")) {
				t.Errorf("the refused list printed %q / %q or opened the catalog", r.stdout, r.stderr)
			}
		})
	}
}

// TestForeignClientRefused: a process of another user (uid 65534) that can
// reach root's socket is refused by the owner, and says why.
func TestForeignClientRefused(t *testing.T) {
	requireRoot(t)
	home := newHome(t)
	owner := startServe(t, home)
	makeSparse(t, filepath.Join(home, "secret.img"), mib)
	manage(t, home, "secret", filepath.Join(home, "secret.img"))
	r := runBin(executableByAll(t, bin), home, asNobody(true), "-f", "json", "list")
	t.Logf("refused: %s", r.stderr)
	assertRefused(t, "list as uid 65534", r.stderr, r.code,
		fmt.Sprintf("pid %d", owner.Process.Pid), "runs as uid 0", "refuses calls from uid 65534", "run volback as root")
	if strings.Contains(r.stdout+r.stderr, "secret") {
		t.Errorf("uid 65534 saw the volume list: %q", r.stdout)
	}
	if got := lockHolder(t, home); got != owner.Process.Pid {
		t.Errorf("catalog held by pid %d after the refusal, want serve (%d)", got, owner.Process.Pid)
	}
}

// TestServeOwnership: serve takes the catalog over from a CLI verb that
// owns it once that verb finishes, and refuses, naming the owner, when
// another serve keeps it.
func TestServeOwnership(t *testing.T) {
	requireRoot(t)
	home := slowHome(t)
	backup, stderr := startCapture(t, home, "backup-create", "vol")
	eventually(t, "backup-create owns the catalog", func() bool {
		return exists(socketPath(home)) && lockHolder(t, home) == backup.Process.Pid
	})
	serve := start(t, home, "serve")
	if err := backup.Wait(); err != nil {
		t.Fatalf("backup-create: %v\n%s", err, stderr)
	}
	eventually(t, "serve owns the catalog once backup-create is done", func() bool {
		return exists(socketPath(home)) && lockHolder(t, home) == serve.Process.Pid
	})
	began := time.Now()
	r := runAs(home, nil, "serve")
	t.Logf("second serve after %v: %s", time.Since(began).Round(time.Millisecond), r.stderr)
	assertRefused(t, "a second serve", r.stderr, r.code, fmt.Sprintf("pid %d", serve.Process.Pid), "stop it first")
	if lockHolder(t, home) != serve.Process.Pid {
		t.Error("the refused serve took the catalog")
	}
}
