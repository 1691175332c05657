package main

// -rounds: one run of a workload swings ±15–60% on a shared VM, so W8–W10
// judged against a single W1 would be luck. The round workloads run
// several times, each round on new tools with empty repositories, and the
// table gets the median round of each.

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// roundWorkloads are the workloads -rounds repeats. W5 runs once on the
// last round's tools (restic's and borg's take minutes), and so do W7 and
// the -scale ones (their own data; they are what the medians judge).
var roundWorkloads = []string{"W1", "W2", "W3", "W4", "W6"}

// roundCount is how many rounds run: -rounds, or 1 when no round workload
// is selected.
func (b *bench) roundCount() int {
	if !slices.ContainsFunc(roundWorkloads, b.cfg.selected) {
		return 1
	}
	return b.cfg.rounds
}

// roundDir holds round k's tool state. The last round's is the work folder
// itself, where a run without -rounds keeps it, since W5, W7 and -scale
// continue from it; earlier rounds get a folder each, removed whole.
func (b *bench) roundDir(k int) string {
	if k == b.roundCount() {
		return b.work
	}
	return filepath.Join(b.work, fmt.Sprintf("round-%d", k))
}

// newStates makes new instances of the tools with empty repositories under
// dir. A tool whose version check failed, or whose setup fails, carries
// that error into every row.
func (b *bench) newStates(ctx context.Context, dir string) []*state {
	mkErr := os.MkdirAll(dir, 0o755) // borg init wants its parent to exist
	var states []*state
	for _, name := range b.cfg.tools {
		st := &state{t: newTool(name, b.cfg, dir), err: b.unavailable[name]}
		if st.err == nil {
			err := mkErr
			if err == nil {
				err = st.t.setup(ctx)
			}
			if err != nil {
				st.err = fmt.Errorf("creating its repository: %w", err)
			}
		}
		if st.err != nil {
			logf("%s: %v", name, st.err)
		}
		states = append(states, st)
	}
	return states
}

// w2Seed is the seed of round k's rewrite in W2. Each round needs its own:
// the same seed would write the same bytes at the same offsets again, and
// round 2's incremental would find nothing changed.
func w2Seed(round int) uint64 { return 1 + uint64(round) }

// mergeRounds makes one row per workload and tool (in the order they first
// appear) from the rows of each round; see mergeRow.
func mergeRounds(rounds [][]*row) []*row {
	if len(rounds) == 1 {
		return rounds[0]
	}
	type key struct{ workload, tool string }
	var order []key
	byKey := map[key][]*row{} // by round; nil where a round made no row
	for i, rows := range rounds {
		for _, r := range rows {
			k := key{r.workload, r.tool}
			if byKey[k] == nil {
				order = append(order, k)
				byKey[k] = make([]*row, len(rounds))
			}
			byKey[k][i] = r
		}
	}
	out := make([]*row, 0, len(order))
	for _, k := range order {
		out = append(out, mergeRow(k.workload, k.tool, byKey[k]))
	}
	return out
}

// mergeRow is the row of one workload and tool over its rounds (nil: the
// round made none, which counts as a failure). A failed round wins: its
// row, error or bad data, is shown with the rounds that failed, since a
// median of the others would hide it. Otherwise the median round by time
// per byte (its seconds, except in W6 rand, which stops at a time budget),
// the lower middle one for an even count, with its own RSS, repository and
// note, and the spread in the note.
func mergeRow(workload, tool string, rounds []*row) *row {
	n := len(rounds)
	var failed []string
	var shown *row
	for i, r := range rounds {
		if r == nil || r.err != "" || r.badData {
			failed = append(failed, strconv.Itoa(i+1))
			if shown == nil {
				shown = r
				if r == nil {
					shown = &row{workload: workload, tool: tool, err: "no result"}
				}
			}
		}
	}
	if shown != nil {
		r := *shown
		which := fmt.Sprintf("round %s of %d", failed[0], n)
		switch {
		case len(failed) == n:
			which = fmt.Sprintf("all %d rounds", n)
		case len(failed) > 1:
			which = fmt.Sprintf("rounds %s of %d", strings.Join(failed, ", "), n)
		}
		if r.err != "" {
			r.err = which + ": " + r.err
		} else {
			r.note = joinNote(r.note, which)
		}
		return &r
	}
	sorted := slices.Clone(rounds)
	slices.SortStableFunc(sorted, func(x, y *row) int { return cmp.Compare(timePerByte(x), timePerByte(y)) })
	r := *sorted[(n-1)/2]
	fast, slow := sorted[0], sorted[n-1]
	spread := fmt.Sprintf("%.2f–%.2f s", fast.secs, slow.secs)
	if slices.ContainsFunc(sorted, func(x *row) bool { return x.bytes != r.bytes }) {
		spread = fmt.Sprintf("%.0f–%.0f MB/s", slow.mbps(), fast.mbps())
	}
	r.note = joinNote(r.note, fmt.Sprintf("median of %d (%s)", n, spread))
	return &r
}

// timePerByte ranks rounds; plain seconds for a row that counts no bytes.
func timePerByte(r *row) float64 {
	if r.bytes > 0 {
		return r.secs / float64(r.bytes)
	}
	return r.secs
}

func joinNote(note, more string) string {
	if note == "" {
		return more
	}
	return note + "; " + more
}
