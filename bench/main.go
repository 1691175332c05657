// Command bench runs the same block-image workloads through volback, restic,
// borg and cp on data it makes itself, and prints one table of wall time,
// throughput, repository growth and peak memory, judged against the targets
// in docs/BENCHMARKS.md.
//
//	go run ./bench -volback ./volback [-size 2G] [-only W1,W3] [-rounds 3] [-out docs/BENCHMARKS.md]
//
// It installs nothing: a missing tool is reported in its rows.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	volback     string
	size        int64
	workdir     string
	only        []string // workloads W1..W6; empty means all
	tools       []string
	out         string
	skipSlow    bool
	slowTimeout time.Duration
	keep        bool
	ceph        bool  // run W7 on the Ceph test cluster
	rbdSize     int64 // W7's image
	scale       bool  // also run W8, W9, W10 (bench/scale.go)
	rounds      int   // runs of each of roundWorkloads; the table has their median
}

// selected reports whether workload w runs: the -only list, or every one
// (W7 only with -ceph).
func (c config) selected(w string) bool {
	if w == "W7" && !c.ceph {
		return false
	}
	if w == "W8" || w == "W9" || w == "W10" {
		return c.scale
	}
	return len(c.only) == 0 || slices.Contains(c.only, w)
}

// fileWorkloads reports whether any of W1–W6 (the image-file workloads) runs.
func (c config) fileWorkloads() bool {
	return slices.ContainsFunc([]string{"W1", "W2", "W3", "W4", "W5", "W6"}, c.selected)
}

// allTools: volback-aes and volback-chacha are volback on a repository
// encrypted with aes-256-gcm or chacha20-poly1305 (repo-init).
var allTools = []string{"volback", "volback-aes", "volback-chacha", "restic", "borg", "cp"}

func main() {
	var cfg config
	var size, only, tools, rbdSize string
	flag.StringVar(&cfg.volback, "volback", "./volback", "the volback binary to measure")
	flag.StringVar(&size, "size", "2G", "image size (K, M, G suffixes; a whole number of MiB); W5 scales with it")
	flag.StringVar(&cfg.workdir, "workdir", "/var/tmp", "parent of the bench's temporary folder (needs about 8× -size free)")
	flag.StringVar(&only, "only", "", "comma-separated workloads to run (W1..W6); default all")
	flag.StringVar(&tools, "tools", strings.Join(allTools, ","), "comma-separated tools to run")
	flag.StringVar(&cfg.out, "out", "", "markdown file whose results section gets the table (e.g. docs/BENCHMARKS.md)")
	flag.BoolVar(&cfg.skipSlow, "skip-slow", false, "skip restic and borg on W5 (they read every hole of the sparse image)")
	flag.DurationVar(&cfg.slowTimeout, "slow-timeout", 2*time.Minute, "give up on restic's and borg's W5 after this long (0: never)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the work folder (data, repositories) for inspection")
	flag.BoolVar(&cfg.ceph, "ceph", false, "also run W7 (RBD) on the Ceph test cluster of VOLBACK_CEPH_* (make bench-ceph starts one); needs a bench built with -tags ceph,pacific")
	flag.StringVar(&rbdSize, "rbd-size", "4G", "W7's RBD image size")
	flag.IntVar(&cfg.rounds, "rounds", 1, "run W1, W2, W3, W4 and W6 this many times, each round on new repositories, and report the median round (one run swings ±15-60% on a shared VM); the rounds before the last are removed once their rows are taken, even with -keep")
	flag.BoolVar(&cfg.scale, "scale", false, "also run W8 (1 TiB sparse, 8 GiB of data), W9 (16 GiB dense) and W10 (four 2 GiB at once), volback and cp only; they are judged against W1, W2, W3 and W6 of the same run; needs about 60 GiB free under -workdir")
	flag.Parse()

	var err error
	if cfg.size, err = parseSize(size); err != nil {
		usage(err)
	}
	if cfg.rbdSize, err = parseSize(rbdSize); err != nil {
		usage(err)
	}
	if err := checkRounds(cfg.rounds); err != nil {
		usage(err)
	}
	if cfg.only, err = parseList(only, []string{"W1", "W2", "W3", "W4", "W5", "W6", "W7"}); err != nil {
		usage(err)
	}
	if slices.Contains(cfg.only, "W7") && !cfg.ceph {
		usage(fmt.Errorf("W7 runs on the Ceph test cluster: add -ceph (make bench-ceph)"))
	}
	if cfg.tools, err = parseList(tools, allTools); err != nil {
		usage(err)
	}
	if !filepath.IsAbs(cfg.volback) {
		if abs, err := filepath.Abs(cfg.volback); err == nil {
			cfg.volback = abs
		}
	}
	if err := benchMain(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// checkRounds refuses a -rounds below 1.
func checkRounds(n int) error {
	if n < 1 {
		return fmt.Errorf("-rounds %d: want at least 1", n)
	}
	return nil
}

func usage(err error) {
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	flag.Usage()
	os.Exit(2)
}

func benchMain(cfg config) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work, err := os.MkdirTemp(cfg.workdir, "volback-bench-")
	if err != nil {
		return fmt.Errorf("work folder: %w; pick another with -workdir", err)
	}
	if cfg.keep {
		logf("work folder %s is kept (-keep)", work)
	} else {
		defer os.RemoveAll(work)
	}
	b := &bench{
		cfg:    cfg,
		work:   work,
		img:    filepath.Join(work, "data", "img.img"),
		sparse: filepath.Join(work, "data", "sparse.img"),
	}
	if err := os.MkdirAll(filepath.Dir(b.img), 0o755); err != nil {
		return err
	}

	if !cfg.fileWorkloads() {
		cfg.tools = []string{"volback"} // W7 alone compares volback with rbd itself
		b.cfg.tools = cfg.tools
	}
	versions := map[string]string{}
	b.unavailable = map[string]error{}
	for _, name := range cfg.tools {
		v, err := newTool(name, cfg, work).version(ctx)
		versions[name] = v
		if err != nil {
			b.unavailable[name] = err
		}
	}
	b.states = b.newStates(ctx, b.roundDir(1))
	for _, st := range b.states {
		if st.err != nil {
			versions[st.t.name()] = oneLine(st.err)
		}
	}

	start := time.Now()
	if cfg.fileWorkloads() {
		if err := makeImage(b.img, cfg.size, 1); err != nil {
			return fmt.Errorf("making the image: %w", err)
		}
		logf("image %s: %s (half random, a quarter zeros, a quarter text, 1 MiB stripes) in %.1f s",
			b.img, mib(cfg.size), time.Since(start).Seconds())
	}

	b.run(ctx)
	logf("workloads took %.0f s", time.Since(start).Seconds())
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted; no table")
	}

	slices.SortStableFunc(b.rows, func(x, y *row) int {
		return slices.Index(workloadOrder, x.workload) - slices.Index(workloadOrder, y.workload)
	})
	judge(b.rows, b.denseTime())
	table := markdown(b.rows)
	fmt.Println(table)

	if cfg.out != "" {
		write := writeResults
		switch {
		case cfg.scale:
			write = func(path, section string) error { return writeBetween(path, section, beginScaleMarker, endScaleMarker) }
		case !cfg.fileWorkloads():
			write = func(path, section string) error { return writeBetween(path, section, beginRBDMarker, endRBDMarker) }
		}
		if err := write(cfg.out, b.section(table, versions)); err != nil {
			return fmt.Errorf("writing %s: %w", cfg.out, err)
		}
		logf("results written to %s", cfg.out)
	}
	return nil
}

// denseTime is volback's W1 time scaled to W5's data size: the time of
// "backing up 1 GiB dense" that W5 must stay within twice of.
func (b *bench) denseTime() float64 {
	for _, r := range b.rows {
		if r.workload == "W1" && r.tool == "volback" && r.ok() {
			return r.secs * float64(b.sparseData()) / float64(b.cfg.size)
		}
	}
	return 0
}

// section is the markdown the -out file gets: facts, then the table.
func (b *bench) section(table string, versions map[string]string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "Run %s with", today())
	if b.cfg.fileWorkloads() {
		fmt.Fprintf(&s, " `-size %s`", sizeString(b.cfg.size))
	}
	if b.cfg.ceph {
		fmt.Fprintf(&s, " `-ceph -rbd-size %s`", sizeString(b.cfg.rbdSize))
	}
	if len(b.cfg.only) > 0 {
		fmt.Fprintf(&s, " `-only %s`", strings.Join(b.cfg.only, ","))
	}
	if b.cfg.skipSlow {
		s.WriteString(" `-skip-slow`")
	}
	if b.cfg.rounds > 1 {
		fmt.Fprintf(&s, " `-rounds %d`", b.cfg.rounds)
	}
	s.WriteString(".\n\n")
	for _, f := range machineFacts() {
		fmt.Fprintf(&s, "- %s\n", f)
	}
	for _, name := range b.cfg.tools {
		fmt.Fprintf(&s, "- %s: %s\n", name, strings.Join(strings.Fields(versions[name]), " "))
	}
	if b.cfg.selected("W7") {
		fmt.Fprintf(&s, "- Ceph: %s\n", cephVersion())
	}
	if tree := sourceTree(); tree != "" {
		fmt.Fprintf(&s, "- source tree: %s\n", tree)
	}
	s.WriteString("\n" + table)
	return s.String()
}

// sourceTree names the commit the bench runs in (the one `make bench`
// builds volback from), marked when files differ from it.
func sourceTree() string {
	_, out, err := run(context.Background(), command{name: "git", args: []string{"describe", "--always", "--dirty"}})
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func newTool(name string, cfg config, work string) tool {
	switch name {
	case "volback":
		return newVolback(cfg.volback, work)
	case "volback-aes":
		return newEncryptedVolback(cfg.volback, work, "aes-256-gcm", name)
	case "volback-chacha":
		return newEncryptedVolback(cfg.volback, work, "chacha20-poly1305", name)
	case "restic":
		return newRestic(work)
	case "borg":
		return newBorg(work)
	default:
		return newCp(work)
	}
}

// parseSize reads 2G, 512M, 1048576K or plain bytes; the result must be a
// whole number of 1 MiB stripes.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	num := strings.ToUpper(strings.TrimSpace(s))
	switch {
	case strings.HasSuffix(num, "K"):
		mult, num = 1<<10, num[:len(num)-1]
	case strings.HasSuffix(num, "M"):
		mult, num = 1<<20, num[:len(num)-1]
	case strings.HasSuffix(num, "G"):
		mult, num = 1<<30, num[:len(num)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M or G suffix", s)
	}
	size := n * mult
	if size%stripe != 0 || size < 64<<20 {
		return 0, fmt.Errorf("size %q: want a whole number of MiB, at least 64M", s)
	}
	return size, nil
}

func sizeString(n int64) string {
	if n%(1<<30) == 0 {
		return fmt.Sprintf("%dG", n>>30)
	}
	return fmt.Sprintf("%dM", n>>20)
}

// parseList splits a comma list and refuses names outside allowed.
func parseList(s string, allowed []string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		i := slices.IndexFunc(allowed, func(a string) bool { return strings.EqualFold(a, f) })
		if i < 0 {
			return nil, fmt.Errorf("%q is not one of %s", f, strings.Join(allowed, ", "))
		}
		out = append(out, allowed[i])
	}
	return out, nil
}
