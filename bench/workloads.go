package main

// The workloads W1–W6 from the issue, each run through every tool the same
// way. A workload that needs an earlier backup (W3, W6 need one of the
// image) makes it untimed when that workload was not selected.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// workloadOrder is the table's order. W5 runs last (see run) but is listed
// in its place.
var workloadOrder = []string{"W1", "W2", "W3", "W4", "W5", "W6 seq", "W6 warm", "W6 rand", "W7 full", "W7 incr", "W7 restore",
	"W9", "W8", "W8 incr", "W8 restore", "W8 mount", "catalog", "W10"}

// state is one tool's progress through the bench.
type state struct {
	t    tool
	err  error  // unavailable: every row of this tool says so
	last string // latest backup of the image
}

type bench struct {
	cfg    config
	work   string
	img    string // the dense image of cfg.size
	sparse string // the sparse image of W5
	imgSum string // sha256 of the image as it is now; "" when not yet known
	states []*state
	rows   []*row

	unavailable map[string]error // tools whose version check failed
	round       int              // the round running, from 1 (-rounds)
}

// sparseSize and sparseData scale W5 with -size: 64 GiB with 1 GiB of
// data at the default 2 GiB.
func (b *bench) sparseSize() int64 { return 32 * b.cfg.size }
func (b *bench) sparseData() int64 { return b.cfg.size / 2 }

// step is one workload: prep changes the data for all tools, fn runs it
// for one.
type step struct {
	name string
	fn   func(context.Context, *state)
	prep func() error
}

// run executes the selected workloads: W1–W4 and W6 in rounds (-rounds),
// each on new tools, then W5 on the last round's. W5 goes last: restic and
// borg may hit the slow timeout there, and a killed borg leaves its
// repository locked.
func (b *bench) run(ctx context.Context) {
	defer func() {
		if b.cfg.selected("W7") && ctx.Err() == nil {
			b.w7(ctx) // its own volback home and images, no other tools
		}
		if b.cfg.scale && ctx.Err() == nil {
			b.scale(ctx) // W8, W9, W10 (-scale): after the rows they are judged against
		}
	}()
	steps := []step{
		{"W1", b.w1, nil},
		{"W2", b.w2, b.prepW2},
		{"W3", b.w3, nil},
		{"W4", b.w4, nil},
		{"W6", b.w6, nil},
	}
	n := b.roundCount()
	var rounds [][]*row
	for k := 1; k <= n && ctx.Err() == nil; k++ {
		b.round = k
		if k > 1 {
			b.states = b.newStates(ctx, b.roundDir(k))
		}
		if n > 1 {
			logf("round %d of %d", k, n)
		}
		first := len(b.rows)
		b.runSteps(ctx, steps)
		rounds = append(rounds, slices.Clone(b.rows[first:]))
		b.rows = b.rows[:first]
		if k < n {
			// Its rows are taken; its repositories would only take space.
			if err := os.RemoveAll(b.roundDir(k)); err != nil {
				logf("removing round %d: %v", k, err)
			}
		}
	}
	b.rows = append(b.rows, mergeRounds(rounds)...)
	b.runSteps(ctx, []step{{"W5", b.w5, b.prepW5}})
}

// runSteps runs the selected steps through every tool of the round.
func (b *bench) runSteps(ctx context.Context, steps []step) {
	for _, s := range steps {
		if !b.cfg.selected(s.name) || ctx.Err() != nil {
			continue
		}
		if s.prep != nil {
			if err := s.prep(); err != nil {
				b.allFail(s.name, fmt.Errorf("preparing data: %w", err))
				continue
			}
		}
		for _, st := range b.states {
			if ctx.Err() != nil {
				break
			}
			if st.err != nil {
				b.fail(s.name, st, st.err)
				continue
			}
			s.fn(ctx, st)
		}
	}
}

func (b *bench) add(r *row) {
	b.rows = append(b.rows, r)
	if r.err != "" {
		logf("%-7s %-7s %s", r.workload, r.tool, r.err)
	} else {
		logf("%-7s %-7s %6.2f s %s", r.workload, r.tool, r.secs, r.note)
	}
}

// fail adds error rows for workload (both W6 rows for "W6").
func (b *bench) fail(workload string, st *state, err error) {
	names := []string{workload}
	if workload == "W6" {
		names = []string{"W6 seq", "W6 rand"}
	}
	for _, w := range names {
		b.add(&row{workload: w, tool: st.t.name(), err: oneLine(err)})
	}
}

func (b *bench) allFail(workload string, err error) {
	for _, st := range b.states {
		b.fail(workload, st, err)
	}
}

// backupRow times one backup and the repository growth it caused.
func (b *bench) backupRow(ctx context.Context, workload string, st *state, src string, incremental bool, logical int64) (string, *row) {
	before, err := st.t.repoBytes()
	r := &row{workload: workload, tool: st.t.name(), bytes: logical}
	if err != nil {
		r.err = oneLine(err)
		return "", r
	}
	id, m, err := st.t.backup(ctx, src, incremental)
	if err != nil {
		r.err = oneLine(err)
		return "", r
	}
	after, err := st.t.repoBytes()
	if err != nil {
		r.err = oneLine(err)
		return "", r
	}
	r.secs, r.rssKiB = m.wall.Seconds(), m.rssKiB
	// W1 reports the whole repository, the others what they added.
	r.repo, r.hasRepo, r.growth = after-before, true, workload != "W1"
	if !r.growth {
		r.repo = after
	}
	return id, r
}

// ensureBackup gives st a backup of the image, made untimed if no workload
// has made one yet.
func (b *bench) ensureBackup(ctx context.Context, st *state) error {
	if st.last != "" {
		return nil
	}
	logf("%-7s %-7s making a first backup (untimed) for the workloads that need one", "", st.t.name())
	id, _, err := st.t.backup(ctx, b.img, false)
	if err != nil {
		return fmt.Errorf("first backup: %w", err)
	}
	st.last = id
	return nil
}

// W1: full backup of the image.
func (b *bench) w1(ctx context.Context, st *state) {
	id, r := b.backupRow(ctx, "W1", st, b.img, false, b.cfg.size)
	if r.err == "" {
		st.last = id
	}
	b.add(r)
}

// prepW2 rewrites 1% of the image in scattered 64 KiB pieces, new ones in
// each round.
func (b *bench) prepW2() error {
	n, err := rewriteScattered(b.img, 0.01, w2Seed(b.round))
	b.imgSum = ""
	if err == nil {
		logf("W2: rewrote %s of the image in %d KiB pieces", mib(n), pieceSize>>10)
	}
	return err
}

// W2: incremental backup after the rewrite.
func (b *bench) w2(ctx context.Context, st *state) {
	if err := b.ensureBackup(ctx, st); err != nil {
		b.fail("W2", st, err)
		return
	}
	id, r := b.backupRow(ctx, "W2", st, b.img, true, b.cfg.size)
	if r.err == "" {
		st.last = id
	}
	b.add(r)
}

// W3: restore the latest backup of the image to a new file and check it.
func (b *bench) w3(ctx context.Context, st *state) {
	if err := b.ensureBackup(ctx, st); err != nil {
		b.fail("W3", st, err)
		return
	}
	if b.imgSum == "" {
		sum, err := fileSHA256(b.img)
		if err != nil {
			b.fail("W3", st, err)
			return
		}
		b.imgSum = sum
	}
	dir := filepath.Join(b.work, "restore-"+st.t.name())
	path, m, cleanup, err := st.t.restore(ctx, st.last, dir)
	if cleanup != nil {
		defer cleanup()
	}
	if err != nil {
		b.fail("W3", st, err)
		return
	}
	r := &row{workload: "W3", tool: st.t.name(), secs: m.wall.Seconds(), rssKiB: m.rssKiB, bytes: b.cfg.size}
	sum, err := fileSHA256(path)
	switch {
	case err != nil:
		r.badData, r.note = true, "FAIL: cannot read restored file: "+oneLine(err)
	case sum != b.imgSum:
		r.badData, r.note = true, "FAIL: sha256 differs from the image"
	default:
		r.note = "sha256 matches"
	}
	b.add(r)
}

// W4: a second full backup of the unchanged image.
func (b *bench) w4(ctx context.Context, st *state) {
	if err := b.ensureBackup(ctx, st); err != nil {
		b.fail("W4", st, err)
		return
	}
	id, r := b.backupRow(ctx, "W4", st, b.img, false, b.cfg.size)
	if r.err == "" {
		st.last = id
	}
	b.add(r)
}

func (b *bench) prepW5() error {
	data := b.sparseData()
	pieces := int(max(1, data/(64<<20)))
	start := time.Now()
	err := makeSparse(b.sparse, b.sparseSize(), data, pieces, 100)
	logf("W5: sparse image %s with %s of data in %d pieces (%.1f s)", mib(b.sparseSize()), mib(data), pieces, time.Since(start).Seconds())
	return err
}

// W5: full backup of the sparse image. MB/s counts its data, not its holes.
func (b *bench) w5(ctx context.Context, st *state) {
	slow := st.t.name() == "restic" || st.t.name() == "borg"
	if slow && b.cfg.skipSlow {
		b.fail("W5", st, errors.New("skipped (-skip-slow)"))
		return
	}
	if slow && b.cfg.slowTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.cfg.slowTimeout)
		defer cancel()
	}
	_, r := b.backupRow(ctx, "W5", st, b.sparse, false, b.sparseData())
	b.add(r)
}

// W6: read the latest backup through the tool's mount, sequentially and
// then randomly, each on a fresh mount so the random reads find none of the
// sequential pass in the tool's own cache either.
func (b *bench) w6(ctx context.Context, st *state) {
	if err := b.ensureBackup(ctx, st); err != nil {
		b.fail("W6", st, err)
		return
	}
	b.add(b.mountRow(ctx, st, "W6 seq", func(file string, r *row) error {
		dd, size, err := readSequential(ctx, file)
		r.secs, r.bytes, r.note = dd.wall.Seconds(), size, "dd bs=1M"
		return err
	}))
	if w, ok := st.t.(warmer); ok {
		// The repository (or the copy) in the page cache, the mount fresh:
		// what reading costs besides the disk.
		if err := w.warm(); err != nil {
			b.add(&row{workload: "W6 warm", tool: st.t.name(), err: oneLine(err)})
		} else {
			b.add(b.mountRow(ctx, st, "W6 warm", func(file string, r *row) error {
				dd, size, err := readWarm(ctx, file)
				r.secs, r.bytes, r.note = dd.wall.Seconds(), size, "dd bs=1M, repository in the page cache, mount fresh"
				return err
			}))
		}
	}
	b.add(b.mountRow(ctx, st, "W6 rand", func(file string, r *row) error {
		d, n, err := readRandom(file)
		r.secs, r.bytes = d.Seconds(), n*randomIO
		r.note = fmt.Sprintf("%.0f IOPS (%d × 4 KiB, %d readers)", float64(n)/d.Seconds(), n, randomProcs)
		return err
	}))
}

// mountRow mounts st's latest backup, runs read on its image file, and
// records the mount process's peak RSS before unmounting.
func (b *bench) mountRow(ctx context.Context, st *state, workload string, read func(string, *row) error) *row {
	r := &row{workload: workload, tool: st.t.name()}
	mnt := filepath.Join(b.work, "mnt-"+st.t.name())
	m, err := st.t.mount(ctx, st.last, mnt)
	if err != nil {
		r.err = oneLine(err)
		return r
	}
	if err := read(m.file, r); err != nil {
		r.err = oneLine(err)
	}
	r.rssKiB = m.peakRSS()
	if m.proc == nil {
		r.note += ", plain file on disk, no mount"
	}
	if err := m.stop(); err != nil {
		r.note += "; " + oneLine(err)
	}
	return r
}

// oneLine keeps an error to one table cell.
func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
