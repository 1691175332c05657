package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStripeKindsMixIsExact(t *testing.T) {
	kinds := stripeKinds(400, 1)
	count := map[stripeKind]int{}
	for _, k := range kinds {
		count[k]++
	}
	if count[stripeRandom] != 200 || count[stripeZero] != 100 || count[stripeText] != 100 {
		t.Fatalf("mix = %v, want 200 random, 100 zero, 100 text", count)
	}
	again := stripeKinds(400, 1)
	if !equalKinds(kinds, again) {
		t.Fatal("same seed gave a different order")
	}
	if equalKinds(kinds, stripeKinds(400, 2)) {
		t.Fatal("different seeds gave the same order")
	}
}

func equalKinds(a, b []stripeKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMakeImageIsDeterministicAllocatedAndMixed(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	const size = 16 << 20
	for _, p := range []string{a, b} {
		if err := makeImage(p, size, 7); err != nil {
			t.Fatal(err)
		}
	}
	sa, _ := fileSHA256(a)
	sb, _ := fileSHA256(b)
	if sa != sb {
		t.Fatal("two images of the same seed differ")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(a, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Blocks*512 < size {
		t.Fatalf("size %d, allocated %d: want %d fully allocated (zeros written, not holes)", st.Size, st.Blocks*512, size)
	}
	data, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	var zero, text, random int
	for i := 0; i < size; i += stripe {
		s := data[i : i+stripe]
		switch {
		case bytes.Count(s, []byte{0}) == stripe:
			zero++
		case bytes.Count(s, []byte{'\n'}) > stripe/200:
			text++
		default:
			random++
		}
	}
	if zero != 4 || text != 4 || random != 8 {
		t.Fatalf("stripes: %d zero, %d text, %d random; want 4, 4, 8", zero, text, random)
	}
}

func TestRewriteScatteredChangesAboutOnePercent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	const size = 64 << 20
	if err := makeImage(p, size, 1); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	n, err := rewriteScattered(p, 0.01, 2)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(p)
	if len(after) != size {
		t.Fatalf("size changed to %d", len(after))
	}
	if n != 10*pieceSize {
		t.Fatalf("wrote %d bytes, want 10 pieces of %d", n, pieceSize)
	}
	changed, aligned := 0, 0
	for i := range before {
		if before[i] != after[i] {
			changed++
		}
	}
	// Random over random keeps 1/256 of bytes by chance; pieces may overlap.
	if changed == 0 || changed > int(n) {
		t.Fatalf("%d bytes changed, want some and at most %d", changed, n)
	}
	// Find piece starts: a changed byte after an unchanged one.
	for i := 1; i < size; i++ {
		if before[i] != after[i] && before[i-1] == after[i-1] && i%4096 == 0 {
			aligned++
		}
	}
	if aligned > 3 {
		t.Fatalf("%d of the rewritten pieces start 4 KiB-aligned; offsets should be unaligned", aligned)
	}
}

func TestMakeSparseHoldsOnlyItsData(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sparse.img")
	const size, data = 1 << 30, 16 << 20
	if err := makeSparse(p, size, data, 4, 100); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Size() != size {
		t.Fatalf("stat: %v, size %d", err, st.Size())
	}
	stored, err := storedBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	if stored < data || stored > data+1<<20 {
		t.Fatalf("storedBytes = %d, want about %d (holes not counted)", stored, data)
	}
	f, _ := os.Open(p)
	defer f.Close()
	piece := make([]byte, data/4)
	if _, err := f.ReadAt(piece, size/4); err != nil {
		t.Fatal(err)
	}
	if bytes.Count(piece, []byte{0}) > len(piece)/2 {
		t.Fatal("the second piece (at a quarter of the image) is mostly zeros")
	}
}

func TestRunReportsStderrRSSAndTimeout(t *testing.T) {
	ctx := context.Background()
	m, _, err := run(ctx, command{name: "sh", args: []string{"-c", "echo disk on fire >&2; exit 3"}})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("error = %v, want exit status and stderr tail", err)
	}
	if m.rssKiB <= 0 {
		t.Fatalf("peak RSS %d KiB, want > 0", m.rssKiB)
	}
	_, out, err := run(ctx, command{name: "sh", args: []string{"-c", "echo $BENCHX"}, env: []string{"BENCHX=yes"}})
	if err != nil || strings.TrimSpace(string(out)) != "yes" {
		t.Fatalf("env not passed: %q, %v", out, err)
	}
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = run(tctx, command{name: "sh", args: []string{"-c", "sleep 30 & wait"}})
	var te timeoutError
	if !errors.As(err, &te) || time.Since(start) > 10*time.Second {
		t.Fatalf("err = %v after %v, want a timeout soon after 200ms", err, time.Since(start))
	}
	_, _, err = run(ctx, command{name: "no-such-tool-here"})
	if err == nil {
		t.Fatal("missing binary ran")
	}
}

func TestFirstArgsNamesTheVerb(t *testing.T) {
	got := firstArgs([]string{"--home", "/h", "-q", "-f", "json", "backup-create", "--incremental", "vol1", "x"})
	if got != "backup-create vol1" {
		t.Fatalf("firstArgs = %q", got)
	}
}

func TestCpToolRoundTrip(t *testing.T) {
	work := t.TempDir()
	img := filepath.Join(work, "img.img")
	if err := makeImage(img, 4<<20, 3); err != nil {
		t.Fatal(err)
	}
	c := newCp(work)
	ctx := context.Background()
	if err := c.setup(ctx); err != nil {
		t.Fatal(err)
	}
	id, m, err := c.backup(ctx, img, false)
	if err != nil || m.wall <= 0 {
		t.Fatalf("backup: %v (%v)", err, m.wall)
	}
	if n, _ := c.repoBytes(); n != 4<<20-1<<20 && n != 4<<20 {
		// One zero stripe of four may be stored as a hole by --sparse=always.
		t.Fatalf("repository holds %d bytes", n)
	}
	p, _, cleanup, err := c.restore(ctx, id, filepath.Join(work, "r"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := fileSHA256(img)
	got, _ := fileSHA256(p)
	if got != want {
		t.Fatal("restored copy differs")
	}
	cleanup()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("cleanup left %s", p)
	}
}

func TestMissingToolSaysNotInstalled(t *testing.T) {
	v := newVolback(filepath.Join(t.TempDir(), "volback"), t.TempDir())
	if _, err := v.version(context.Background()); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("err = %v", err)
	}
	if _, err := toolVersion(context.Background(), "no-such-tool-here"); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("err = %v", err)
	}
}

func TestJudge(t *testing.T) {
	const g = 1 << 30
	rows := []*row{
		{workload: "W1", tool: "volback", secs: 2, bytes: 2 * g, repo: 100, hasRepo: true, rssKiB: 50 << 10},
		{workload: "W1", tool: "restic", secs: 20, bytes: 2 * g},
		{workload: "W1", tool: "cp", secs: 1.5, bytes: 2 * g},
		{workload: "W2", tool: "volback", secs: 1, bytes: 2 * g, repo: 30, hasRepo: true, rssKiB: 50 << 10},
		{workload: "W2", tool: "restic", secs: 10, bytes: 2 * g, repo: 100, hasRepo: true},
		{workload: "W3", tool: "volback", secs: 1, bytes: 2 * g, badData: true, rssKiB: 50 << 10},
		{workload: "W3", tool: "restic", secs: 10, bytes: 2 * g},
		{workload: "W3", tool: "cp", secs: 1.5, bytes: 2 * g},
		{workload: "W4", tool: "volback", err: "volback backup-create: exit status 1"},
		{workload: "W4", tool: "restic", secs: 10, bytes: 2 * g},
		{workload: "W5", tool: "volback", secs: 1.9, bytes: g, rssKiB: 200 << 10},
		{workload: "W6 seq", tool: "volback", secs: 1, bytes: 2 * g, rssKiB: 30 << 10},
		{workload: "W6 seq", tool: "restic", secs: 15, bytes: 2 * g},
		{workload: "W6 seq", tool: "cp", secs: 1.2, bytes: 2 * g},
		{workload: "W6 rand", tool: "volback", secs: 1, bytes: 4096},
		{workload: "W6 rand", tool: "restic", secs: 15, bytes: 8192},
	}
	judge(rows, 1.0) // dense: 1 s for W5's data
	want := []string{
		"PASS: 10.0× restic (≥8), 0.75 of cp speed (≥0.5), RSS 50 MiB (<96)",
		"", "",
		"FAIL: 10.0× restic (≥5), growth 0.30 of restic's (≤0.25), RSS 50 MiB (<96)",
		"",
		"FAIL: 10.0× restic (≥4), 1.50× cp speed (≥1.2), restored bytes differ, RSS 50 MiB (<96)",
		"", "",
		"FAIL: did not run",
		"",
		"FAIL: 1.90× dense time (<2), RSS 200 MiB (<96)",
		"FAIL: 15.0× restic (≥10), 1.20× dd of the image (≥1.5), 2147 MB/s (≥1500), RSS 30 MiB (< 64M cache + 64)",
		"", "",
		"",
		"",
	}
	for i, r := range rows {
		if r.target != want[i] {
			t.Errorf("%s %s target = %q, want %q", r.workload, r.tool, r.target, want[i])
		}
	}
	if rows[1].ratio != 10 || rows[2].ratio != 0.75 {
		t.Errorf("ratios %v %v, want 10 and 0.75", rows[1].ratio, rows[2].ratio)
	}
	// Random reads stop at a time budget: the ratio is per byte.
	if rows[15].ratio != 7.5 {
		t.Errorf("W6 rand ratio %v, want 7.5 (per byte)", rows[15].ratio)
	}
	if rows[9].ratio != 0 {
		t.Errorf("ratio against a failed volback row = %v, want none", rows[9].ratio)
	}
	table := markdown(rows)
	if !strings.Contains(table, "| W4       | volback |") || !strings.Contains(table, "exit status 1") {
		t.Errorf("table lacks the failed row:\n%s", table)
	}
}

func TestWriteResultsKeepsTheProse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "B.md")
	if err := writeResults(p, "first\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if !strings.HasPrefix(string(b), "# Benchmarks\n") || !strings.Contains(string(b), beginMarker+"\nfirst\n"+endMarker) {
		t.Fatalf("new file:\n%s", b)
	}
	prose := "# Benchmarks\n\nintro\n\n" + beginMarker + "\nold table\n" + endMarker + "\n\n## Targets\n\nkept\n"
	os.WriteFile(p, []byte(prose), 0o644)
	if err := writeResults(p, "new table\n"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	want := "# Benchmarks\n\nintro\n\n" + beginMarker + "\nnew table\n" + endMarker + "\n\n## Targets\n\nkept\n"
	if string(b) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b, want)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"2G": 2 << 30, "256M": 256 << 20, "65536k": 64 << 20, "67108864": 64 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1G", "1.5G", "100K", "65M1", "32M"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
	for _, n := range []int{0, -1} {
		if err := checkRounds(n); err == nil || !strings.Contains(err.Error(), "at least 1") {
			t.Errorf("checkRounds(%d) = %v, want a refusal", n, err)
		}
	}
	if err := checkRounds(3); err != nil {
		t.Errorf("checkRounds(3) = %v", err)
	}
	if _, err := parseList("W1,w7", []string{"W1", "W2"}); err == nil {
		t.Error("parseList accepted W7")
	}
	if got, _ := parseList("w2, W1", []string{"W1", "W2"}); strings.Join(got, ",") != "W2,W1" {
		t.Errorf("parseList = %v", got)
	}
}

func TestChangedBytesRoundsToChunks(t *testing.T) {
	const piece, cs = 64 << 10, 64 << 10
	// An aligned piece covers one chunk, an unaligned one two; overlapping
	// pieces count once.
	changed, rounded := changedBytes([]int64{0, 3*cs + 100, 3*cs + 200}, piece, cs)
	if changed != piece+piece+100 || rounded != cs+2*cs {
		t.Fatalf("changedBytes = %d, %d; want %d, %d", changed, rounded, piece+piece+100, 3*cs)
	}
}

func TestW7NeedsCeph(t *testing.T) {
	cfg := config{only: nil}
	if cfg.selected("W7") || !cfg.selected("W1") {
		t.Fatal("without -ceph, W7 must not run and W1 must")
	}
	cfg = config{ceph: true, only: []string{"W7"}}
	if !cfg.selected("W7") || cfg.fileWorkloads() {
		t.Fatal("-ceph -only W7 must run W7 alone")
	}
}

// TestJudgeScale: the -scale rows are held against W1, W2, W3 and W6 of
// the same run; W9 fails on RSS more than 8 MiB over W1's, W10 on time.
func TestJudgeScale(t *testing.T) {
	const gib = 1 << 30
	rows := []*row{
		{workload: "W1", tool: "volback", secs: 10, bytes: 2 * gib, rssKiB: 60 << 10},
		{workload: "W2", tool: "volback", secs: 8, bytes: 2 * gib, rssKiB: 60 << 10},
		{workload: "W3", tool: "volback", secs: 4, bytes: 2 * gib},
		{workload: "W6 seq", tool: "volback", secs: 2, bytes: 2 * gib},
		{workload: "W9", tool: "volback", secs: 85, bytes: 16 * gib, rssKiB: 70 << 10},
		{workload: "W8", tool: "volback", secs: 45, bytes: w8Data, rssKiB: 80 << 10},
		{workload: "W8 incr", tool: "volback", secs: 30, bytes: w8Data, rssKiB: 80 << 10},
		{workload: "W8 restore", tool: "volback", secs: 17, bytes: w8Data, rssKiB: 50 << 10},
		{workload: "W8 mount", tool: "volback", secs: 8, bytes: w8Data, rssKiB: 90 << 10},
		{workload: "catalog", tool: "volback", secs: 1e-9, catalogShare: 0.004},
		{workload: "W10", tool: "volback", secs: 60, bytes: 8 * gib, rssKiB: 120 << 10},
	}
	judge(rows, 1)
	want := map[string]string{"W9": "FAIL", "W8": "PASS", "W8 incr": "PASS", "W8 restore": "PASS",
		"W8 mount": "PASS", "catalog": "PASS", "W10": "FAIL"}
	for _, r := range rows {
		if w, ok := want[r.workload]; ok && !strings.HasPrefix(r.target, w) {
			t.Errorf("%s: %q, want %s", r.workload, r.target, w)
		}
	}
	if !strings.Contains(rows[4].target, "RSS +10.0 MiB over W1's") {
		t.Errorf("W9: %q", rows[4].target)
	}
}

// The machine facts say whether the VM hands freed memory to its host.
func TestPageReporting(t *testing.T) {
	dir := t.TempDir()
	if got := pageReporting(dir); got != "" {
		t.Fatalf("no such parameters: %q, want nothing", got)
	}
	set := func(order, kib string) {
		os.WriteFile(filepath.Join(dir, "page_reporting_order"), []byte(order+"\n"), 0o600)
		os.WriteFile(filepath.Join(dir, "reported_kib"), []byte(kib+"\n"), 0o600)
	}
	for _, c := range []struct{ order, kib, want string }{
		{"9", "62737448", "on: free blocks of 2048 KiB go back to the host, 59.8 GiB so far"},
		{"11", "62737448", "off (page_reporting_order 11)"},
		{"9", "0", "none reported"},
	} {
		set(c.order, c.kib)
		if got := pageReporting(dir); !strings.HasPrefix(got, c.want) {
			t.Errorf("order %s, %s KiB reported: %q, want it to start %q", c.order, c.kib, got, c.want)
		}
	}
}

func TestMergeRoundsTakesTheMedianRoundOfEachTool(t *testing.T) {
	const g = 1 << 30
	vb := func(secs float64, rss int64, note string) *row {
		return &row{workload: "W1", tool: "volback", secs: secs, bytes: 2 * g, repo: rss * 10, hasRepo: true, rssKiB: rss, note: note}
	}
	cp := func(secs float64) *row { return &row{workload: "W1", tool: "cp", secs: secs, bytes: 2 * g} }
	w3 := func(secs float64) *row {
		return &row{workload: "W3", tool: "volback", secs: secs, bytes: 2 * g, note: "sha256 matches"}
	}
	rounds := [][]*row{
		{vb(8.81, 1, "a"), cp(1), w3(3)},
		{vb(4.91, 2, "b"), cp(3), w3(1)},
		{vb(6.5, 3, "c"), cp(2), w3(2)},
	}
	got := mergeRounds(rounds)
	if len(got) != 3 {
		t.Fatalf("%d rows, want one per workload and tool: %v", len(got), got)
	}
	if r := got[0]; r.tool != "volback" || r.secs != 6.5 || r.rssKiB != 3 || r.repo != 30 || r.note != "c; median of 3 (4.91–8.81 s)" {
		t.Errorf("volback W1 = %+v, want round 3's row with the spread in its note", *r)
	}
	if r := got[1]; r.tool != "cp" || r.secs != 2 || r.note != "median of 3 (1.00–3.00 s)" {
		t.Errorf("cp W1 = %+v, want cp's own median, 2 s", *r)
	}
	if r := got[2]; r.workload != "W3" || r.secs != 2 || r.note != "sha256 matches; median of 3 (1.00–3.00 s)" {
		t.Errorf("volback W3 = %+v, want 2 s", *r)
	}
	if rounds[2][0].note != "c" {
		t.Error("merging changed a round's row")
	}
}

func TestMergeRoundsEvenTakesTheLowerMiddle(t *testing.T) {
	var rounds [][]*row
	for _, s := range []float64{4, 1, 3, 2} {
		rounds = append(rounds, []*row{{workload: "W2", tool: "volback", secs: s, bytes: 1 << 30}})
	}
	if r := mergeRounds(rounds)[0]; r.secs != 2 || !strings.Contains(r.note, "median of 4 (1.00–4.00 s)") {
		t.Errorf("merged %+v, want the lower middle, 2 s", *r)
	}
}

func TestMergeRoundsShowsAFailedRound(t *testing.T) {
	ok := func(w string, secs float64) *row {
		return &row{workload: w, tool: "volback", secs: secs, bytes: 1 << 30}
	}
	bad := &row{workload: "W3", tool: "volback", secs: 1, bytes: 1 << 30, badData: true, note: "FAIL: sha256 differs from the image"}
	rounds := [][]*row{
		{ok("W1", 1), ok("W3", 1), {workload: "W4", tool: "volback", err: "exit status 1"}, ok("W6 warm", 1)},
		{{workload: "W1", tool: "volback", err: "exit status 2"}, ok("W3", 2), {workload: "W4", tool: "volback", err: "exit status 1"}},
		{ok("W1", 3), bad, {workload: "W4", tool: "volback", err: "exit status 1"}, ok("W6 warm", 1)},
	}
	want := []struct{ err, note string }{
		{err: "round 2 of 3: exit status 2"},
		{note: "FAIL: sha256 differs from the image; round 3 of 3"},
		{err: "all 3 rounds: exit status 1"},
		{err: "round 2 of 3: no result"},
	}
	got := mergeRounds(rounds)
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i, r := range got {
		if r.err != want[i].err || r.note != want[i].note {
			t.Errorf("%s: err %q note %q, want %q %q", r.workload, r.err, r.note, want[i].err, want[i].note)
		}
	}
	if !got[1].badData {
		t.Error("W3 lost its bad data")
	}
}

func TestMergeRoundsRanksByTimePerByte(t *testing.T) {
	// W6 rand stops at a time budget: its rounds differ in bytes read.
	rand := func(secs float64, n int64) []*row {
		return []*row{{workload: "W6 rand", tool: "restic", secs: secs, bytes: n * 1e6}}
	}
	r := mergeRounds([][]*row{rand(15, 30), rand(15, 10), rand(14, 20)})[0]
	if r.bytes != 20e6 || r.note != "median of 3 (1–2 MB/s)" {
		t.Errorf("merged %+v, want the 20 MB round and the MB/s spread", *r)
	}
}

func TestOneRoundIsUnchanged(t *testing.T) {
	rows := []*row{{workload: "W1", tool: "volback", secs: 1, note: "x"}}
	if got := mergeRounds([][]*row{rows}); len(got) != 1 || got[0] != rows[0] || got[0].note != "x" {
		t.Errorf("one round merged to %v", got)
	}
}

func TestW2ChangesTheImageInEveryRound(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	const size = 16 << 20
	if err := makeImage(p, size, 1); err != nil {
		t.Fatal(err)
	}
	b := &bench{img: p}
	for k := 1; k <= 3; k++ {
		b.round, b.imgSum = k, "stale"
		before, _ := os.ReadFile(p)
		if err := b.prepW2(); err != nil {
			t.Fatal(err)
		}
		after, _ := os.ReadFile(p)
		changed := 0
		for i := range before {
			if before[i] != after[i] {
				changed++
			}
		}
		// 2 pieces of 64 KiB; random over random keeps 1/256 by chance.
		if changed < pieceSize {
			t.Errorf("round %d changed %d bytes, want most of 2 × %d", k, changed, pieceSize)
		}
		if b.imgSum != "" {
			t.Errorf("round %d kept W3's sum of the old image", k)
		}
	}
}

func TestRoundsHaveTheirOwnTools(t *testing.T) {
	work := t.TempDir()
	b := &bench{
		cfg:         config{tools: []string{"cp", "restic"}, rounds: 3, only: []string{"W1"}},
		work:        work,
		unavailable: map[string]error{"restic": errors.New("not installed")},
	}
	if b.roundDir(3) != work || b.roundDir(1) != filepath.Join(work, "round-1") {
		t.Errorf("round dirs %s, %s: want the last in the work folder", b.roundDir(1), b.roundDir(3))
	}
	states := b.newStates(context.Background(), b.roundDir(2))
	if c := states[0].t.(*cpTool); c.dir != filepath.Join(work, "round-2", "cp") || states[0].err != nil {
		t.Errorf("cp of round 2 in %s (%v)", c.dir, states[0].err)
	} else if _, err := os.Stat(c.dir); err != nil {
		t.Errorf("cp's folder was not made: %v", err)
	}
	if states[1].err == nil {
		t.Error("a missing tool got no error in round 2")
	}
	b.cfg.only = []string{"W5"}
	if b.roundCount() != 1 || b.roundDir(1) != work {
		t.Error("-only W5 runs rounds: W5 is not repeated")
	}
	if s := b.section("", nil); !strings.Contains(s, "`-rounds 3`") {
		t.Errorf("section header lacks the rounds:\n%s", s)
	}
}
