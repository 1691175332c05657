package main

// W6: serving a backup through a FUSE mount. Start the tool's mount in the
// background, wait for the image file to appear, read it sequentially (dd)
// and randomly (4 KiB preads), take the mount process's peak RSS, unmount.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	mountWait   = 2 * time.Minute // restic and borg load their index first
	randomReads = 20000
	randomIO    = 4 << 10
	randomProcs = 4
	// randomBudget caps the random-read phase: through restic's and borg's
	// mounts a 4 KiB read costs a whole blob, tens of milliseconds.
	randomBudget = 15 * time.Second
)

// mounted is a live mount (or, with proc nil, a plain file).
type mounted struct {
	proc    *exec.Cmd
	stderr  *lockedBuffer
	file    string       // the backup's image file
	unmount func() error // the tool's own unmount; nil means umount(2)
	mnt     string
	exited  chan struct{}
}

// startMount starts c in the background and waits until file exists.
func startMount(ctx context.Context, c command, file string, unmount func() error) (*mounted, error) {
	mnt := c.args[len(c.args)-1]
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command(c.name, c.args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), c.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	m := &mounted{proc: cmd, stderr: &lockedBuffer{}, file: file, unmount: unmount, mnt: mnt, exited: make(chan struct{})}
	cmd.Stdout = m.stderr
	cmd.Stderr = m.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s mount: %w", c.name, err)
	}
	go func() { cmd.Wait(); close(m.exited) }()
	deadline := time.Now().Add(mountWait)
	for {
		if _, err := os.Stat(file); err == nil {
			return m, nil
		}
		select {
		case <-m.exited:
			return nil, fmt.Errorf("%s mount exited before %s appeared: %v%s", c.name, file, cmd.ProcessState, tail(m.stderr.bytes()))
		case <-ctx.Done():
			m.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("%s mount: %s did not appear within %v%s", c.name, file, mountWait, tail(m.stderr.bytes()))
		}
	}
}

// peakRSS is the mount process's VmHWM so far, KiB (0 for a plain file).
func (m *mounted) peakRSS() int64 {
	if m.proc == nil {
		return 0
	}
	return procHWM(m.proc.Process.Pid)
}

// stop unmounts and waits for the mount process to end: the tool's own
// unmount, then umount(2), then SIGINT, and only at last SIGKILL plus a lazy
// unmount, so a hung mount never outlives the bench.
func (m *mounted) stop() error {
	if m.proc == nil {
		return nil
	}
	steps := []func() error{
		m.unmount,
		func() error { return syscall.Unmount(m.mnt, 0) },
		func() error { return m.proc.Process.Signal(syscall.SIGINT) },
	}
	var errs []error
	for _, step := range steps {
		if step == nil {
			continue
		}
		if err := step(); err != nil {
			errs = append(errs, err)
		}
		select {
		case <-m.exited:
			return nil // clean, whatever an earlier step said
		case <-time.After(10 * time.Second):
		}
	}
	syscall.Kill(-m.proc.Process.Pid, syscall.SIGKILL)
	<-m.exited
	syscall.Unmount(m.mnt, syscall.MNT_DETACH)
	return fmt.Errorf("mount at %s did not end cleanly, killed: %w", m.mnt, errors.Join(errs...))
}

// readSequential times dd of the whole file with caches dropped.
func readSequential(ctx context.Context, file string) (measure, int64, error) {
	st, err := os.Stat(file)
	if err != nil {
		return measure{}, 0, err
	}
	m, _, err := timed(ctx, command{name: "dd", args: []string{"if=" + file, "of=/dev/null", "bs=1M"}})
	return m, st.Size(), err
}

// readWarm times dd of the whole file without dropping caches.
func readWarm(ctx context.Context, file string) (measure, int64, error) {
	st, err := os.Stat(file)
	if err != nil {
		return measure{}, 0, err
	}
	m, _, err := run(ctx, command{name: "dd", args: []string{"if=" + file, "of=/dev/null", "bs=1M"}})
	return m, st.Size(), err
}

// readRandom drops caches and times up to randomReads 4 KiB preads at
// random 4 KiB-aligned offsets from randomProcs goroutines, stopping early
// at randomBudget; it returns the time taken and the reads done.
func readRandom(file string) (time.Duration, int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	blocks := st.Size() / randomIO
	if blocks == 0 {
		return 0, 0, fmt.Errorf("%s is smaller than %d bytes", file, randomIO)
	}
	dropCaches()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
		done atomic.Int64
	)
	start := time.Now()
	deadline := start.Add(randomBudget)
	for g := range randomProcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 0x4b))
			buf := make([]byte, randomIO)
			for i := range randomReads / randomProcs {
				if i%16 == 0 && time.Now().After(deadline) {
					return
				}
				if _, err := f.ReadAt(buf, rng.Int64N(blocks)*randomIO); err != nil {
					mu.Lock()
					ferr = fmt.Errorf("read %s: %w", file, err)
					mu.Unlock()
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return time.Since(start), done.Load(), ferr
}

// lockedBuffer collects a background process's output while the bench may
// read it for an error message.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
