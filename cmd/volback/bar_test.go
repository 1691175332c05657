package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/volback/volback/service"
)

// TestBarRate: the first report may come with hundreds of MB already done
// a moment after the bar exists; no rate is shown until minRateWindow after
// it, and then it is the rate since that first report.
func TestBarRate(t *testing.T) {
	var out bytes.Buffer
	now := time.Unix(1000, 0)
	b := &bar{out: &out, on: true, now: func() time.Time { return now }}
	const total = 4 << 30
	b.update(service.Progress{Phase: "backup", Done: 600 << 20, Total: total})
	now = now.Add(100 * time.Millisecond)
	b.update(service.Progress{Phase: "backup", Done: 700 << 20, Total: total})
	if strings.Contains(out.String(), "/s") {
		t.Fatalf("a rate before minRateWindow of real progress: %q", out.String())
	}
	now = now.Add(1900 * time.Millisecond) // 2 s after the first report, 200 MiB more
	b.update(service.Progress{Phase: "backup", Done: 800 << 20, Total: total})
	frames := strings.Split(out.String(), "\r")
	last := frames[len(frames)-1]
	if !strings.Contains(last, "100 MiB/s") || !strings.Contains(last, "800 MiB / 4.00 GiB") || !strings.Contains(last, "19%") {
		t.Errorf("frame %q, want 800 MiB / 4.00 GiB, 19%%, 100 MiB/s", last)
	}
	if !regexp.MustCompile(`0:3[0-9] left`).MatchString(last) {
		t.Errorf("frame %q, want about 33 s left", last)
	}
	b.finish()
	if !strings.HasSuffix(out.String(), "\r\x1b[K") {
		t.Errorf("finish did not clear the line: %q", out.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.50 KiB", 10 << 20: "10.0 MiB", 999 << 20: "999 MiB", 1000 << 20: "0.98 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
