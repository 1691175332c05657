package main

// Running child processes: timed runs (caches dropped first, wall time and
// the child's peak RSS measured) and plain untimed set-up commands.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// measure is what one timed operation cost.
type measure struct {
	wall   time.Duration
	rssKiB int64 // peak resident set of the child (and its waited-for children), KiB
}

// command is one child process to run.
type command struct {
	dir  string   // working directory; "" for the bench's own
	env  []string // added to the bench's environment
	name string
	args []string
}

// timeoutError marks a run that was killed for exceeding its deadline.
type timeoutError struct{ after time.Duration }

func (e timeoutError) Error() string { return fmt.Sprintf("timeout after %.0f s", e.after.Seconds()) }

// dropCaches writes back dirty pages and empties the page cache so a timed
// run reads from disk, not from what the previous run left in memory.
// Without root it cannot, and says so once.
func dropCaches() {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil && !warnedDrop {
		warnedDrop = true
		logf("warning: cannot drop caches (%v); timings include warm caches", err)
	}
}

var warnedDrop bool

// timed drops caches, runs c and returns its wall time, its peak RSS and its
// stdout. A failure carries the tail of stderr.
func timed(ctx context.Context, c command) (measure, []byte, error) {
	dropCaches()
	return run(ctx, c)
}

// run runs c to completion without dropping caches.
func run(ctx context.Context, c command) (measure, []byte, error) {
	cmd := exec.CommandContext(ctx, c.name, c.args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), c.env...)
	// Its own process group, so a timeout kills helpers it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	m := measure{wall: time.Since(start)}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			m.rssKiB = ru.Maxrss // KiB on Linux
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return m, stdout.Bytes(), timeoutError{after: m.wall}
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) || errors.Is(err, exec.ErrNotFound) {
			return m, stdout.Bytes(), fmt.Errorf("%s %s: %v%s", c.name, firstArgs(c.args), err, tail(stderr.Bytes()))
		}
		return m, stdout.Bytes(), fmt.Errorf("%s: %w", c.name, err)
	}
	return m, stdout.Bytes(), nil
}

// firstArgs names the sub-command for an error without the whole argv:
// the first two arguments that are neither options, option values nor paths.
func firstArgs(args []string) string {
	var keep []string
	for i := 0; i < len(args) && len(keep) < 2; i++ {
		a := args[i]
		switch {
		case a == "--home" || a == "-f" || a == "--target":
			i++ // skip its value
		case strings.HasPrefix(a, "-") || strings.HasPrefix(a, "/"):
		default:
			keep = append(keep, a)
		}
	}
	return strings.Join(keep, " ")
}

// tail returns the last few lines of a command's stderr, prefixed for an
// error message, or "" when it printed nothing.
func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	s = strings.Join(lines, " | ")
	if len(s) > 400 {
		s = "…" + s[len(s)-400:]
	}
	return ": " + s
}

// storedBytes is the space a tree takes: per regular file the smaller of
// its size and its allocated blocks, so a sparse copy counts only its data
// and a small file is not rounded up to a block. Missing is zero.
func storedBytes(root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		size := info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			size = min(size, st.Blocks*512)
		}
		total += size
		return nil
	})
	return total, err
}

// readTree reads every regular file under root once (into the page cache).
func readTree(root string) error {
	buf := make([]byte, 1<<20)
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		for {
			if _, err := f.Read(buf); err != nil {
				return nil
			}
		}
	})
}

// procHWM reads a live process's peak resident set (VmHWM) in KiB.
func procHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kib)
			return kib
		}
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
