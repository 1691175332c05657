package main

// The -scale workloads (issue 13): a 1 TiB sparse volume (W8), a 16 GiB
// dense one (W9), the catalog's size after both, and four 2 GiB volumes
// backed up at once through one owner (W10). They run volback and cp
// only: restic and borg would read the terabyte of holes.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	w8Size   = 1 << 40  // apparent
	w8Data   = 8 << 30  // of which data
	w8Piece  = 64 << 20 // in pieces this big, spread evenly
	w9Size   = 16 << 30
	w10Count = 4
	w10Size  = 2 << 30
)

// scale runs the -scale workloads for the tools that take part.
func (b *bench) scale(ctx context.Context) {
	// W8's 1 TiB volume is over the default backup quota (1000 GiB), and
	// the run makes more than the default 10 backups.
	for _, st := range b.states {
		if v, ok := st.t.(*volback); ok && st.err == nil {
			if _, _, err := run(ctx, v.cmd("quota-update", "--backups", "-1", "--backup-gigabytes", "-1", "admin")); err != nil {
				st.err = fmt.Errorf("lifting the backup quotas for -scale: %w", err)
			}
		}
	}
	steps := []struct {
		name string
		fn   func(context.Context, *state)
	}{{"W9", b.w9}, {"W8", b.w8}, {"W10", b.w10}}
	for _, s := range steps {
		if !b.cfg.selected(s.name) || ctx.Err() != nil {
			continue
		}
		for _, st := range b.states {
			switch {
			case ctx.Err() != nil:
			case st.err != nil:
				b.fail(s.name, st, st.err)
			case st.t.name() != "volback" && st.t.name() != "cp":
				// restic and borg would read the holes; no rows.
			default:
				s.fn(ctx, st)
			}
		}
		b.cleanScale(s.name)
	}
	if b.cfg.selected("W8") || b.cfg.selected("W9") {
		for _, st := range b.states {
			if v, ok := st.t.(*volback); ok && st.err == nil {
				b.add(b.catalogRow(v))
			}
		}
	}
}

// cleanScale removes a workload's data once every tool ran it (disk space:
// W9's image alone is 16 GiB).
func (b *bench) cleanScale(workload string) {
	switch workload {
	case "W9":
		os.Remove(b.path("w9.img"))
	case "W8":
		os.Remove(b.path("w8.img"))
	case "W10":
		for i := range w10Count {
			os.Remove(b.path(fmt.Sprintf("w10-%d.img", i)))
		}
	}
	// cp's copies of them
	for _, st := range b.states {
		if c, ok := st.t.(*cpTool); ok {
			matches, _ := filepath.Glob(filepath.Join(c.dir, "*w[189]*"))
			for _, m := range matches {
				os.Remove(m)
			}
		}
	}
}

func (b *bench) path(name string) string { return filepath.Join(b.work, "data", name) }

// ensure makes a data file once, logging how long it took.
func (b *bench) ensure(name, what string, make func(string) error) (string, error) {
	p := b.path(name)
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	start := time.Now()
	if err := make(p); err != nil {
		os.Remove(p)
		return "", fmt.Errorf("making %s: %w", what, err)
	}
	logf("%s: %s (%.1f s)", name, what, time.Since(start).Seconds())
	return p, nil
}

// W9: a 16 GiB dense volume of the bench's mix.
func (b *bench) w9(ctx context.Context, st *state) {
	img, err := b.ensure("w9.img", "16 GiB of the mix", func(p string) error { return makeImage(p, w9Size, 9) })
	if err != nil {
		b.fail("W9", st, err)
		return
	}
	_, r := b.backupRow(ctx, "W9", st, img, false, w9Size)
	r.growth = true
	b.add(r)
}

// w8Pieces are the data pieces' offsets in the W8 volume.
func w8Pieces() []int64 {
	n := int64(w8Data / w8Piece)
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i) * (w8Size / n)
	}
	return out
}

// W8: a 1 TiB sparse volume with 8 GiB of data; its incremental after 1%
// of the data changed; a restore to a sparse file; reads of the data
// through the mount.
func (b *bench) w8(ctx context.Context, st *state) {
	img, err := b.ensure("w8.img", "1 TiB sparse, 8 GiB of data in 64 MiB pieces",
		func(p string) error { return makeSparse(p, w8Size, w8Data, w8Data/w8Piece, 800) })
	if err != nil {
		b.fail("W8", st, err)
		return
	}
	first, r := b.backupRow(ctx, "W8", st, img, false, w8Data)
	r.growth = true
	b.add(r)
	if r.err != "" {
		return
	}
	// Rewritten in place: a tool that runs W8 after this one backs up the
	// rewritten image, which is as good a W8 for it.
	n, err := rewritePieces(img, w8Pieces(), w8Piece, 0.01, 81)
	if err != nil {
		b.fail("W8 incr", st, err)
		return
	}
	logf("W8: rewrote %s of the data in %d KiB pieces", mib(n), pieceSize>>10)
	last, r := b.backupRow(ctx, "W8 incr", st, img, true, w8Data)
	b.add(r)
	if r.err != "" {
		last = first
	}
	// Restore the latest to a (sparse) file; its data must equal the image's.
	path, m, cleanup, err := st.t.restore(ctx, last, filepath.Join(b.work, "restore-w8-"+st.t.name()))
	if cleanup != nil {
		defer cleanup()
	}
	rr := &row{workload: "W8 restore", tool: st.t.name(), secs: m.wall.Seconds(), rssKiB: m.rssKiB, bytes: w8Data}
	if err != nil {
		rr.err = oneLine(err)
	} else if err := samePieces(img, path, w8Pieces(), w8Piece); err != nil {
		rr.badData, rr.note = true, "FAIL: "+oneLine(err)
	} else {
		rr.note = "data pieces match; restored as a sparse file"
	}
	b.add(rr)
	// Read the data pieces through the mount (cp: from the disk).
	b.add(b.mountRowOf(ctx, st, last, "W8 mount", func(file string, r *row) error {
		d, err := readPieces(ctx, file, w8Pieces(), w8Piece)
		r.secs, r.bytes, r.note = d.Seconds(), w8Data, "dd bs=1M of each 64 MiB data piece, caches dropped"
		return err
	}))
}

// W10: four 2 GiB volumes backed up at once by one owner (volback serve);
// cp: four copies at once.
func (b *bench) w10(ctx context.Context, st *state) {
	var imgs []string
	for i := range w10Count {
		img, err := b.ensure(fmt.Sprintf("w10-%d.img", i), "2 GiB of the mix",
			func(p string) error { return makeImage(p, w10Size, uint64(100+i)) })
		if err != nil {
			b.fail("W10", st, err)
			return
		}
		imgs = append(imgs, img)
	}
	r := &row{workload: "W10", tool: st.t.name(), bytes: w10Count * w10Size}
	var m measure
	var err error
	switch t := st.t.(type) {
	case *volback:
		m, err = t.concurrent(ctx, imgs)
		r.note = "4 backup-create at once, one volback serve; peak RSS is the owner's"
	case *cpTool:
		m, err = t.concurrent(ctx, imgs)
		r.note = "4 cp at once"
	}
	if err != nil {
		r.err = oneLine(err)
	}
	r.secs, r.rssKiB = m.wall.Seconds(), m.rssKiB
	b.add(r)
}

// scaleChecks are the targets for the -scale rows, judged against
// volback's rows of W1 (dense backup, 2 GiB by default), W2 (its
// incremental), W3 (restore) and W6 seq (mount reads) of the same run.
func scaleChecks(vb *row, find func(w, tool string) *row) []check {
	if !vb.ok() {
		return nil
	}
	var checks []check
	perByte := func(r *row) float64 { return r.secs / float64(r.bytes) }
	w1 := find("W1", "volback")
	switch vb.workload {
	case "W8":
		if w1.ok() {
			x := vb.secs / (perByte(w1) * float64(w8Data))
			checks = append(checks, check{x <= 1.25, fmt.Sprintf("%.2f× dense time for 8 GiB (≤1.25)", x)})
		}
	case "W8 incr":
		// The dense incremental of W2 (1% rewritten) scaled to 8 GiB.
		if w2 := find("W2", "volback"); w2.ok() {
			x := vb.secs / (perByte(w2) * float64(w8Data))
			checks = append(checks, check{x <= 1.25, fmt.Sprintf("%.2f× the dense incremental time for 8 GiB (≤1.25)", x)})
		}
	case "W8 restore":
		if w3 := find("W3", "volback"); w3.ok() {
			x := vb.mbps() / w3.mbps()
			checks = append(checks, check{x >= 0.9, fmt.Sprintf("%.2f of W3's rate per GiB (≥0.9)", x)})
		}
		if vb.badData {
			checks = append(checks, check{false, "restored bytes differ"})
		}
	case "W8 mount":
		if w6 := find("W6 seq", "volback"); w6.ok() {
			x := vb.mbps() / w6.mbps()
			checks = append(checks, check{x >= 0.9, fmt.Sprintf("%.2f of W6 seq's rate (≥0.9)", x)})
		}
	case "W9":
		if w1.ok() {
			x := perByte(vb) / perByte(w1)
			checks = append(checks, check{x <= 1.1, fmt.Sprintf("%.2f× W1's time per GiB (≤1.1)", x)})
			if vb.rssKiB > 0 && w1.rssKiB > 0 {
				d := kibToMiB(vb.rssKiB - w1.rssKiB)
				checks = append(checks, check{d <= 8, fmt.Sprintf("RSS %+.1f MiB over W1's (≤8)", d)})
			}
		}
	case "catalog":
		checks = append(checks, check{vb.catalogShare <= 0.01, fmt.Sprintf("%.2f%% of the repository (≤1%%)", 100*vb.catalogShare)})
	case "W10":
		if w1.ok() {
			x := vb.secs / (perByte(w1) * float64(vb.bytes))
			checks = append(checks, check{x <= 1.1, fmt.Sprintf("%.2f× the sum at W1's rate (≤1.1)", x)})
		}
		if vb.rssKiB > 0 {
			checks = append(checks, check{vb.rssKiB < 128<<10, fmt.Sprintf("owner RSS %.0f MiB (<128)", kibToMiB(vb.rssKiB))})
		}
	}
	return checks
}

// catalogRow reports the catalog's size against the repository's.
func (b *bench) catalogRow(v *volback) *row {
	r := &row{workload: "catalog", tool: "volback"}
	cat, err := v.catalogBytes()
	if err == nil {
		var repo int64
		repo, err = v.repoBytes()
		r.repo, r.hasRepo = cat, true
		r.catalogShare = float64(cat) / float64(max(repo, 1))
		r.note = fmt.Sprintf("catalog %s for a repository of %s, after W8 and W9", mib(cat), mib(repo))
	}
	if err != nil {
		r.err = oneLine(err)
	}
	r.secs = 1e-9 // no time; ok() wants one
	return r
}

// mountRowOf is mountRow for a given backup id.
func (b *bench) mountRowOf(ctx context.Context, st *state, id, workload string, read func(string, *row) error) *row {
	saved := st.last
	st.last = id
	defer func() { st.last = saved }()
	return b.mountRow(ctx, st, workload, read)
}

// rewritePieces overwrites frac of each data piece with new random data in
// pieceSize (64 KiB) pieces at random, unaligned offsets inside the piece.
func rewritePieces(path string, offsets []int64, piece int64, frac float64, seed uint64) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(seed, 0xd1ff))
	var key [32]byte
	key[0] = byte(seed)
	src := rand.NewChaCha8(key)
	buf := make([]byte, pieceSize)
	per := max(1, int(float64(piece)*frac)/pieceSize)
	var n int64
	for _, off := range offsets {
		for range per {
			src.Read(buf)
			at := off + rng.Int64N(piece-pieceSize)
			if _, err := f.WriteAt(buf, at); err != nil {
				f.Close()
				return n, fmt.Errorf("rewrite %s at %d: %w", path, at, err)
			}
			n += pieceSize
		}
	}
	return n, closeSynced(f)
}

// samePieces compares the data pieces of two files by sha256.
func samePieces(a, b string, offsets []int64, piece int64) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	if sa, sb := fileSize(fa), fileSize(fb); sb < sa {
		return fmt.Errorf("restored file is %d bytes, the image %d", sb, sa)
	}
	sum := func(f *os.File, off int64) (string, error) {
		h := sha256.New()
		_, err := io.CopyBuffer(h, io.NewSectionReader(f, off, piece), make([]byte, 1<<20))
		return hex.EncodeToString(h.Sum(nil)), err
	}
	for _, off := range offsets {
		x, err1 := sum(fa, off)
		y, err2 := sum(fb, off)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if x != y {
			return fmt.Errorf("the data piece at %d differs", off)
		}
	}
	return nil
}

func fileSize(f *os.File) int64 {
	st, err := f.Stat()
	if err != nil {
		return -1
	}
	return st.Size()
}

// readPieces drops caches and times dd of each data piece.
func readPieces(ctx context.Context, file string, offsets []int64, piece int64) (time.Duration, error) {
	dropCaches()
	start := time.Now()
	for _, off := range offsets {
		c := command{name: "dd", args: []string{"if=" + file, "of=/dev/null", "bs=1M",
			fmt.Sprintf("skip=%d", off>>20), fmt.Sprintf("count=%d", piece>>20)}}
		if _, _, err := run(ctx, c); err != nil {
			return time.Since(start), err
		}
	}
	return time.Since(start), nil
}

// concurrent backs up the images at once through one owner (volback serve
// in its own home) and returns the wall time of the four and the owner's
// peak RSS.
func (v *volback) concurrent(ctx context.Context, imgs []string) (measure, error) {
	home := v.home + "-w10"
	if err := os.MkdirAll(home, 0o755); err != nil {
		return measure{}, err
	}
	defer os.RemoveAll(home)
	cmd := func(args ...string) command {
		return command{name: v.bin, args: append([]string{"--home", home, "-q", "-f", "json"}, args...)}
	}
	serve := exec.Command(v.bin, "--home", home, "serve")
	var serveErr lockedBuffer
	serve.Stdout, serve.Stderr = &serveErr, &serveErr
	serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := serve.Start(); err != nil {
		return measure{}, fmt.Errorf("volback serve: %w", err)
	}
	exited := make(chan struct{})
	go func() { serve.Wait(); close(exited) }()
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			syscall.Kill(-serve.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()
	sock := filepath.Join(home, "run", "volback.sock")
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 300 {
			return measure{}, fmt.Errorf("volback serve did not listen within 30 s%s", tail(serveErr.bytes()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, img := range imgs {
		if _, _, err := run(ctx, cmd("manage", "--name", fmt.Sprintf("w10-%d", i), img)); err != nil {
			return measure{}, err
		}
	}
	dropCaches()
	start := time.Now()
	errs := make([]error, len(imgs))
	var wg sync.WaitGroup
	for i := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, out, err := run(ctx, cmd("backup-create", fmt.Sprintf("w10-%d", i)))
			if err == nil && !bytes.Contains(out, []byte(`"available"`)) {
				err = fmt.Errorf("backup of w10-%d is not available: %.200s", i, out)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	m := measure{wall: time.Since(start), rssKiB: procHWM(serve.Process.Pid)}
	return m, errors.Join(errs...)
}

// concurrent copies the images at once (each with its fsync).
func (c *cpTool) concurrent(ctx context.Context, imgs []string) (measure, error) {
	dropCaches()
	start := time.Now()
	errs := make([]error, len(imgs))
	var wg sync.WaitGroup
	for i, img := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := filepath.Join(c.dir, "w10-"+strings.TrimSuffix(filepath.Base(img), ".img"))
			_, _, err := run(ctx, command{name: "cp", args: []string{"--sparse=always", img, dst}})
			if err == nil {
				_, _, err = run(ctx, command{name: "sync", args: []string{dst}})
			}
			os.Remove(dst)
			errs[i] = err
		}()
	}
	wg.Wait()
	return measure{wall: time.Since(start)}, errors.Join(errs...)
}
