package main

// The results table: rows, the targets judged on volback's rows,
// markdown rendering, machine facts and the -out file.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// row is one tool's result for one workload.
type row struct {
	workload string // W1..W5, "W6 seq", "W6 rand"
	tool     string
	err      string  // the run failed or the tool is missing; nothing else is valid
	secs     float64 // wall seconds
	bytes    int64   // bytes the MB/s figure counts
	repo     int64   // repository size (W1) or growth (W2, W4, W5)
	hasRepo  bool
	growth   bool
	rssKiB   int64
	badData  bool   // W3: restored bytes differ from the image
	note     string // IOPS, sha256 result, ...

	catalogShare float64 // catalog: its size over the repository's

	readBytes    int64 // W7 incr: bytes the OSDs served to the backup
	changedBytes int64 // W7 incr: bytes of the 64 KiB chunks the rewrite touched

	ratio  float64 // how many times volback's time this took (see slower); set by judge
	target string  // PASS/FAIL with the checks; set by judge, volback rows only
}

func (r *row) ok() bool { return r != nil && r.err == "" && r.secs > 0 }

func (r *row) mbps() float64 { return float64(r.bytes) / r.secs / 1e6 }

const rssLimitKiB = 96 << 10

// mountCache is the chunk cache the bench gives `volback mount`; the mount's
// peak RSS must stay within it plus mountOverheadKiB (issue: "bounded by the
// cache size plus a small constant"), not within rssLimitKiB.
const (
	mountCache       = "64M"
	mountCacheKiB    = 64 << 10
	mountOverheadKiB = 64 << 10
)

// judge fills each row's ratio to volback and volback's target column.
// dense1G is volback's W1 time scaled to W5's data size: the "backing up
// 1 GiB dense" that W5 is held against.
func judge(rows []*row, dense float64) {
	find := func(w, tool string) *row {
		for _, r := range rows {
			if r.workload == w && r.tool == tool {
				return r
			}
		}
		return nil
	}
	for _, r := range rows {
		if vb := find(r.workload, "volback"); r.ok() && vb.ok() {
			r.ratio = slower(r, vb)
		}
	}
	for _, vb := range rows {
		if vb.tool != "volback" {
			continue
		}
		var checks []check
		restic, cp, rbdRow := find(vb.workload, "restic"), find(vb.workload, "cp"), find(vb.workload, "rbd")
		ofRBD := func(what string) {
			if rbdRow.ok() && vb.ok() {
				x := slower(rbdRow, vb)
				checks = append(checks, check{x >= 0.8, fmt.Sprintf("%.2f of %s speed (≥0.8)", x, what)})
			}
		}
		faster := func(min float64) {
			if restic.ok() && vb.ok() {
				x := slower(restic, vb)
				checks = append(checks, check{x >= min, fmt.Sprintf("%.1f× restic (≥%g)", x, min)})
			}
		}
		ofCP := func(min float64, what string) {
			if cp.ok() && vb.ok() {
				x := slower(cp, vb)
				checks = append(checks, check{x >= min, fmt.Sprintf("%.2f× %s (≥%g)", x, what, min)})
			}
		}
		switch vb.workload {
		case "W1":
			faster(8)
			if cp.ok() && vb.ok() {
				x := slower(cp, vb)
				checks = append(checks, check{x >= 0.5, fmt.Sprintf("%.2f of cp speed (≥0.5)", x)})
			}
		case "W2":
			faster(5)
			if restic.ok() && vb.ok() && restic.hasRepo && vb.hasRepo {
				x := float64(vb.repo) / float64(max(restic.repo, 1))
				checks = append(checks, check{x <= 0.25, fmt.Sprintf("growth %.2f of restic's (≤0.25)", x)})
			}
		case "W3":
			faster(4)
			ofCP(1.2, "cp speed") // issue 13: volback skips zeros where cp copies them
			if vb.badData {
				checks = append(checks, check{false, "restored bytes differ"})
			}
		case "W4":
			faster(5)
		case "W5":
			if vb.ok() && dense > 0 {
				x := vb.secs / dense
				checks = append(checks, check{x < 2, fmt.Sprintf("%.2f× dense time (<2)", x)})
			}
		case "W7 full":
			ofRBD("rbd export")
		case "W7 incr":
			if vb.ok() && vb.changedBytes > 0 {
				x := float64(vb.readBytes) / float64(vb.changedBytes)
				checks = append(checks, check{x <= 2, fmt.Sprintf("read %.2f× the changed chunks (≤2)", x)})
			}
			if full := find("W7 full", "volback"); vb.ok() && full.ok() {
				x := vb.secs / full.secs
				checks = append(checks, check{x < 0.1, fmt.Sprintf("%.3f of the full backup's time (<0.1)", x)})
			}
		case "W7 restore":
			ofRBD("rbd import")
			if vb.badData {
				checks = append(checks, check{false, "restored bytes differ"})
			}
		case "W6 seq":
			faster(10)
			ofCP(1.5, "dd of the image") // issue 13
			if vb.ok() {
				checks = append(checks, check{vb.mbps() >= 1500, fmt.Sprintf("%.0f MB/s (≥1500)", vb.mbps())})
			}
		case "W6 warm":
			if vb.ok() {
				checks = append(checks, check{vb.mbps() >= 1500, fmt.Sprintf("%.0f MB/s (≥1500)", vb.mbps())})
			}
		default:
			checks = append(checks, scaleChecks(vb, find)...)
		}
		switch {
		case !vb.ok() || vb.rssKiB <= 0 || strings.HasPrefix(vb.workload, "W7"), vb.workload == "W9", vb.workload == "W10":
		case strings.HasPrefix(vb.workload, "W6"), vb.workload == "W8 mount":
			limit := int64(mountCacheKiB + mountOverheadKiB)
			checks = append(checks, check{vb.rssKiB < limit, fmt.Sprintf("RSS %.0f MiB (< %s cache + 64)", kibToMiB(vb.rssKiB), mountCache)})
		default:
			checks = append(checks, check{vb.rssKiB < rssLimitKiB, fmt.Sprintf("RSS %.0f MiB (<96)", kibToMiB(vb.rssKiB))})
		}
		vb.target = verdict(vb, checks)
	}
}

// slower is how many times longer r took than vb for the same work: time
// per byte when both count bytes (W6 random reads stop at a time budget, so
// their counts differ), else plain time.
func slower(r, vb *row) float64 {
	if r.bytes > 0 && vb.bytes > 0 {
		return (r.secs / float64(r.bytes)) / (vb.secs / float64(vb.bytes))
	}
	return r.secs / vb.secs
}

type check struct {
	ok   bool
	text string
}

func verdict(vb *row, checks []check) string {
	if vb.err != "" {
		return "FAIL: did not run"
	}
	if len(checks) == 0 {
		return ""
	}
	pass := true
	texts := make([]string, len(checks))
	for i, c := range checks {
		pass = pass && c.ok
		texts[i] = c.text
	}
	if pass {
		return "PASS: " + strings.Join(texts, ", ")
	}
	return "FAIL: " + strings.Join(texts, ", ")
}

func kibToMiB(k int64) float64 { return float64(k) / 1024 }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// markdown renders the rows as one aligned markdown table.
func markdown(rows []*row) string {
	cells := [][]string{{"workload", "tool", "seconds", "MB/s", "× volback time", "repository", "peak RSS", "target", "notes"}}
	for _, r := range rows {
		c := []string{r.workload, r.tool, "", "", "", "", "", r.target, r.note}
		if r.err != "" {
			c[8] = strings.ReplaceAll(r.err, "|", "\\|")
			cells = append(cells, c)
			continue
		}
		c[2] = fmt.Sprintf("%.2f", r.secs)
		if r.bytes > 0 {
			c[3] = fmt.Sprintf("%.0f", r.mbps())
		}
		if r.ratio > 0 {
			c[4] = fmt.Sprintf("%.2f", r.ratio)
		}
		if r.hasRepo {
			c[5] = mib(r.repo)
			if r.growth {
				c[5] = "+" + c[5]
			}
		}
		if r.rssKiB > 0 {
			c[6] = fmt.Sprintf("%.1f MiB", kibToMiB(r.rssKiB))
		}
		cells = append(cells, c)
	}
	width := make([]int, len(cells[0]))
	for _, c := range cells {
		for i, s := range c {
			width[i] = max(width[i], len([]rune(s)))
		}
	}
	var b strings.Builder
	line := func(c []string) {
		b.WriteString("|")
		for i, s := range c {
			fmt.Fprintf(&b, " %s%s |", s, strings.Repeat(" ", width[i]-len([]rune(s))))
		}
		b.WriteString("\n")
	}
	line(cells[0])
	sep := make([]string, len(width))
	for i, w := range width {
		sep[i] = strings.Repeat("-", w)
	}
	line(sep)
	for _, c := range cells[1:] {
		line(c)
	}
	return b.String()
}

// machineFacts describes where the numbers were taken.
func machineFacts() []string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := "unknown"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kib); err == nil {
			mem = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	facts := []string{
		"CPU: " + cpu,
		fmt.Sprintf("cores: %d", runtime.NumCPU()),
		"memory: " + mem,
		"kernel: Linux " + kernel,
		"Go: " + runtime.Version(),
	}
	if r := pageReporting("/sys/module/page_reporting/parameters"); r != "" {
		facts = append(facts, "free page reporting: "+r)
	}
	return facts
}

// pageReporting says whether this VM hands freed memory back to its host
// (virtio-balloon free page reporting, parameters in dir), "" when the
// kernel has none. When it does, every page the page cache takes anew
// costs a host fault: measured here, that slowed cp, dd and rbd export
// (buffered) 1.5-3.5x and volback's O_DIRECT paths hardly at all, so the
// ratios to them depend on it.
func pageReporting(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "page_reporting_order"))
	if err != nil {
		return ""
	}
	order, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return ""
	}
	var kib int64
	if b, err := os.ReadFile(filepath.Join(dir, "reported_kib")); err == nil {
		kib, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	switch {
	case order > 10: // above the largest block the buddy allocator has
		return fmt.Sprintf("off (page_reporting_order %d)", order)
	case kib == 0:
		return "none reported (no balloon device asks for it)"
	}
	return fmt.Sprintf("on: free blocks of %d KiB go back to the host, %.1f GiB so far; the page cache pays a host fault for each new page",
		4<<order, float64(kib)/(1<<20))
}

const (
	beginMarker = "<!-- bench:results:begin -->"
	endMarker   = "<!-- bench:results:end -->"
	// A run of W7 alone (make bench-ceph) has its own markers, so it does
	// not replace the table of W1–W6.
	beginScaleMarker = "<!-- bench:scale:begin -->"
	endScaleMarker   = "<!-- bench:scale:end -->"
	beginRBDMarker   = "<!-- bench:rbd:begin -->"
	endRBDMarker     = "<!-- bench:rbd:end -->"
)

// writeResults puts section between the result markers of path, keeping the
// hand-written text around them; a file without markers gets them appended.
func writeResults(path, section string) error {
	return writeBetween(path, section, beginMarker, endMarker)
}

// writeBetween puts section between the markers begin and end of path.
func writeBetween(path, section, beginMarker, endMarker string) error {
	block := beginMarker + "\n" + section + endMarker + "\n"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	if i := strings.Index(text, beginMarker); i >= 0 {
		if j := strings.Index(text[i:], endMarker); j >= 0 {
			rest := strings.TrimPrefix(text[i+j+len(endMarker):], "\n")
			return os.WriteFile(path, []byte(text[:i]+block+rest), 0o644)
		}
	}
	if text == "" {
		text = "# Benchmarks\n"
	}
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	return os.WriteFile(path, []byte(text+"\n"+block), 0o644)
}

func today() string { return time.Now().UTC().Format("2006-01-02 15:04 UTC") }
