package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volback/volback/index"
	"github.com/volback/volback/service"
)

// ownerHelperEnv makes the test binary a catalog owner for the home it
// names (see TestMain): a real second process to kill.
const ownerHelperEnv = "VOLBACK_TEST_OWNER_HOME"

func TestMain(m *testing.M) {
	if home := os.Getenv(ownerHelperEnv); home != "" {
		os.Exit(runOwnerHelper(home))
	}
	os.Exit(m.Run())
}

// runOwnerHelper owns home's catalog, prints "owner" once it serves, and
// closes on SIGTERM as volback serve does.
func runOwnerHelper(home string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg, err := service.LoadConfig(home)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s, err := Connect(ctx, cfg, nil)
	if err != nil || !s.Owner() {
		fmt.Fprintln(os.Stderr, "owner helper: not the owner:", err)
		return 1
	}
	fmt.Println("owner")
	<-ctx.Done()
	s.Close()
	return 0
}

// Two test verbs: "test-hold" (marked idempotent) and "test-hold-write".
// In an owner helper they create <home>/held (so the test knows the call
// runs) and wait until the process is killed, sending nothing: the client
// can tell the call was accepted only from the status line sent before a
// verb runs. Anywhere else they answer at once with the pid that ran them.
func init() {
	hold := func(_ *S, ctx context.Context, _ service.Ref, _ PF) (int, error) {
		if home := os.Getenv(ownerHelperEnv); home != "" {
			if err := os.WriteFile(filepath.Join(home, "held"), nil, 0o600); err != nil {
				return 0, err
			}
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return os.Getpid(), nil
	}
	register(def(Op{Verb: "test-hold", Idempotent: true}, hold), def(Op{Verb: "test-hold-write"}, hold))
}

// shortHome is a fresh home with a short path (t.TempDir's can be long).
func shortHome(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vbs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testConfig(t *testing.T, home string) service.Config {
	t.Helper()
	cfg, err := service.LoadConfig(home)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ownerProc is an owner helper process.
type ownerProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it exited
}

// startOwner runs an owner helper on home and waits until it serves.
func startOwner(t *testing.T, home string) *ownerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), ownerHelperEnv+"="+home)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	o := &ownerProc{cmd: cmd, done: make(chan struct{})}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "owner\n"
		cmd.Wait()
		close(o.done)
	}()
	t.Cleanup(func() { o.kill(syscall.SIGKILL) })
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("owner helper did not become the owner")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("owner helper did not serve within 30s")
	}
	return o
}

func (o *ownerProc) exited() bool {
	select {
	case <-o.done:
		return true
	default:
		return false
	}
}

// kill signals the helper and waits for it to exit.
func (o *ownerProc) kill(sig syscall.Signal) {
	if o.exited() {
		return
	}
	o.cmd.Process.Signal(sig)
	<-o.done
}

func connectClient(t *testing.T, home string, owner *ownerProc) *Session {
	t.Helper()
	s, err := Connect(context.Background(), testConfig(t, home), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.Owner() || s.OwnerPID() != owner.cmd.Process.Pid {
		t.Fatalf("connected as owner=%v to pid %d, want a client of the helper (pid %d)", s.Owner(), s.OwnerPID(), owner.cmd.Process.Pid)
	}
	return s
}

// TestHandoverBetweenDialAndCall: the owner exits (SIGTERM, then kill -9)
// after a client connected and before its call. The call, never accepted,
// runs here: this process takes the catalog over.
func TestHandoverBetweenDialAndCall(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			home := shortHome(t)
			owner := startOwner(t, home)
			s := connectClient(t, home, owner)
			owner.kill(sig)
			var vols []service.VolumeView
			if err := s.Call(context.Background(), "list", service.Ref{}, &vols, nil); err != nil {
				t.Fatalf("list after the owner got %v: %v", sig, err)
			}
			var pid int
			if err := s.Call(context.Background(), "test-hold-write", service.Ref{}, &pid, nil); err != nil {
				t.Fatalf("a writing verb never accepted by the old owner: %v", err)
			}
			if !s.Owner() || pid != os.Getpid() {
				t.Fatalf("after the owner left: owner=%v, verb ran in pid %d; want this process (%d) as the owner", s.Owner(), pid, os.Getpid())
			}
		})
	}
}

// TestHandoverFollowsNewOwner: when another process took the catalog over
// first, the client follows it.
func TestHandoverFollowsNewOwner(t *testing.T) {
	home := shortHome(t)
	a := startOwner(t, home)
	s := connectClient(t, home, a)
	a.kill(syscall.SIGTERM)
	b := startOwner(t, home)
	var vols []service.VolumeView
	if err := s.Call(context.Background(), "list", service.Ref{}, &vols, nil); err != nil {
		t.Fatal(err)
	}
	if s.Owner() || s.OwnerPID() != b.cmd.Process.Pid {
		t.Fatalf("after owner %d left and %d took over: owner=%v pid %d", a.cmd.Process.Pid, b.cmd.Process.Pid, s.Owner(), s.OwnerPID())
	}
}

// TestHandoverMidCall kills the owner (kill -9) after it accepted a call.
// An idempotent verb runs again on the new owner; any other verb reports
// that its outcome is unknown, and by then the catalog has a new owner.
func TestHandoverMidCall(t *testing.T) {
	for _, verb := range []string{"test-hold", "test-hold-write"} {
		t.Run(verb, func(t *testing.T) {
			home := shortHome(t)
			owner := startOwner(t, home)
			s := connectClient(t, home, owner)
			go func() {
				for !exists(filepath.Join(home, "held")) {
					time.Sleep(5 * time.Millisecond)
				}
				owner.kill(syscall.SIGKILL)
			}()
			var pid int
			err := s.Call(context.Background(), verb, service.Ref{}, &pid, nil)
			select { // the call ends as the owner dies, maybe before it is reaped
			case <-owner.done:
			case <-time.After(10 * time.Second):
				t.Fatalf("the call ended (%v) but the owner was not killed", err)
			}
			if idempotent(verb) {
				if err != nil || pid != os.Getpid() {
					t.Fatalf("%s after the owner died mid-call: pid %d, %v; want it run again in this process", verb, pid, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("%s after the owner died mid-call: no error, want its outcome reported unknown", verb)
			}
			for _, w := range []string{verb, fmt.Sprintf("pid %d", owner.cmd.Process.Pid), "accepted", "unknown"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !s.Owner() {
				t.Error("the session did not take the catalog over before reporting")
			}
		})
	}
}

// TestConnectGivesUpOnSilentHolder: a process that holds the catalog lock
// and never answers is named after ownerWait.
func TestConnectGivesUpOnSilentHolder(t *testing.T) {
	home := shortHome(t)
	cat, err := index.Open(filepath.Join(home, "catalog"), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	defer func(w time.Duration) { ownerWait = w }(ownerWait)
	ownerWait = time.Second
	start := time.Now()
	_, err = Connect(context.Background(), testConfig(t, home), nil)
	if err == nil {
		t.Fatal("Connect succeeded while another holder kept the catalog")
	}
	for _, w := range []string{fmt.Sprintf("pid %d", os.Getpid()), "has not answered", SocketPath(home)} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if d := time.Since(start); d < ownerWait || d > ownerWait+5*time.Second {
		t.Errorf("gave up after %v, want about %v", d, ownerWait)
	}
}

// TestLongHomeSocket: a home too long for a socket address still gets its
// socket in its private run directory (reached through /proc/self/fd),
// mode 0600 in a 0700 directory, and nothing in the temp directory.
func TestLongHomeSocket(t *testing.T) {
	home := filepath.Join(shortHome(t), strings.Repeat("long-home-name-", 10))
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "volback-*"))
	owner, err := Connect(context.Background(), testConfig(t, home), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	sock := SocketPath(home)
	if len(sock) <= maxSocketAddr || filepath.Dir(sock) != filepath.Join(home, "run") {
		t.Fatalf("socket path %s (%d bytes): want one too long for an address, in %s/run", sock, len(sock), home)
	}
	checkMode(t, filepath.Dir(sock), os.ModeDir|0o700)
	checkMode(t, sock, os.ModeSocket|0o600)
	client, err := Connect(context.Background(), testConfig(t, home), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var vols []service.VolumeView
	if err := client.Call(context.Background(), "list", service.Ref{}, &vols, nil); err != nil {
		t.Fatal(err)
	}
	if client.Owner() || !owner.Owner() {
		t.Fatal("the second session is not a client of the first")
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "volback-*"))
	if len(after) > len(before) {
		t.Errorf("new entries in the temp directory: %v (before: %v)", after, before)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != want {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
	}
}

// TestSocketDirRefusals: a socket directory or socket that another user
// could have made or can reach is refused before anything is opened.
func TestSocketDirRefusals(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
	const nobody = 65534
	cases := []struct {
		name  string
		setup func(t *testing.T, run string)
		words []string
	}{
		{"directory of another user", func(t *testing.T, run string) {
			mkdir(t, run, 0o700)
			chown(t, run, nobody)
		}, []string{"socket directory", "uid 65534", "remove it"}},
		{"directory others can enter", func(t *testing.T, run string) {
			mkdir(t, run, 0o700)
			if err := os.Chmod(run, 0o755); err != nil {
				t.Fatal(err)
			}
		}, []string{"mode 0755", "chmod 700"}},
		{"symlink", func(t *testing.T, run string) {
			other := filepath.Join(filepath.Dir(run), "elsewhere")
			mkdir(t, other, 0o700)
			if err := os.Symlink(other, run); err != nil {
				t.Fatal(err)
			}
		}, []string{"not a directory", "remove it"}},
		{"socket of another user", func(t *testing.T, run string) {
			mkdir(t, run, 0o700)
			sock := filepath.Join(run, socketName)
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
			ln.Close()
			chown(t, sock, nobody)
		}, []string{"socket", "uid 65534", "remove"}},
		{"not a socket", func(t *testing.T, run string) {
			mkdir(t, run, 0o700)
			if err := os.WriteFile(filepath.Join(run, socketName), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"not a socket", "remove it"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			home := shortHome(t)
			run := filepath.Join(home, "run")
			c.setup(t, run)
			s, err := Connect(context.Background(), testConfig(t, home), nil)
			if err == nil {
				s.Close()
				t.Fatal("Connect succeeded")
			}
			for _, w := range append(c.words, run) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, err := os.Stat(filepath.Join(home, "catalog")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused Connect opened the catalog (%v)", err)
			}
		})
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func mkdir(t *testing.T, dir string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		t.Fatal(err)
	}
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Lchown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// TestSharedSocketDir: a home shared through [users] may let others enter
// its socket directory, never write it; an unshared one stays private.
func TestSharedSocketDir(t *testing.T) {
	home := t.TempDir()
	run := filepath.Join(home, socketDirName)
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mode   os.FileMode
		shared bool
		ok     bool
	}{{0o700, false, true}, {0o755, false, false}, {0o755, true, true}, {0o775, true, false}, {0o757, true, false}} {
		if err := os.Chmod(run, c.mode); err != nil {
			t.Fatal(err)
		}
		d, err := openSocketDir(home, false, c.shared)
		if (err == nil) != c.ok {
			t.Errorf("mode %#o shared %v: %v, want ok=%v", c.mode, c.shared, err, c.ok)
		}
		if d != nil {
			d.Close()
		}
	}
}

// TestErrorKindsThroughSocket: errors of a call through the socket keep
// their kind, whether the owner refused the call before accepting it (a
// malformed project) or the operation failed (not found, usage), so
// errors.Is works for clients as in process.
func TestErrorKindsThroughSocket(t *testing.T) {
	home := shortHome(t)
	owner := startOwner(t, home)
	s := connectClient(t, home, owner)
	ctx := context.Background()
	for _, c := range []struct {
		ctx  context.Context
		verb string
		req  any
		kind error
	}{
		{ctx, "backup-show", service.Ref{Ref: "no-such-backup"}, service.ErrNotFound},
		{ctx, "backup-delete", service.DeleteRequest{Refs: []string{"no-such-backup"}}, service.ErrNotFound},
		{ctx, "quota-update", service.QuotaRequest{Backups: func() *int64 { v := int64(-5); return &v }()}, service.ErrUsage},
		{ctx, "backup-create", service.BackupRequest{Volume: "nothing"}, service.ErrNotFound},
		{service.WithProject(ctx, "a/b"), "list", service.Ref{}, service.ErrUsage}, // refused before it is accepted
	} {
		err := s.Call(c.ctx, c.verb, c.req, nil, nil)
		if !errors.Is(err, c.kind) {
			t.Errorf("%s through the socket: %v, want kind %v", c.verb, err, c.kind)
		}
	}
	if s.Owner() {
		t.Error("the client took the catalog over")
	}
}
