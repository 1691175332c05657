package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/service"
	"golang.org/x/term"
)

// bar draws a job's progress on stderr when stderr is a terminal: phase,
// bytes done of total, percent, rate and time left.
//
// The rate is measured from the first report onwards, never from when the
// bar was made: the first report can arrive with hundreds of MB already
// done a few milliseconds after the bar exists, which once showed as
// "1.5 TB/s". Until the next report, at least minRateWindow later, no rate
// (and no time left) is shown.
type bar struct {
	mu  sync.Mutex
	out io.Writer
	on  bool
	now func() time.Time

	baseAt   time.Time // first report: where the rate is measured from
	baseDone int64
	based    bool
	drawnAt  time.Time
	drawn    bool
}

const (
	minRateWindow = 150 * time.Millisecond // reports come every 200 ms
	redrawEvery   = 200 * time.Millisecond
)

func newBar(c *cli.Context) *bar {
	return &bar{out: os.Stderr, on: !c.Bool("quiet") && term.IsTerminal(int(os.Stderr.Fd())), now: time.Now}
}

func (b *bar) update(p service.Progress) {
	if p.Notice != "" { // a message, not a position: always shown
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.drawn {
			fmt.Fprint(b.out, "\r\x1b[K")
			b.drawn = false
		}
		fmt.Fprintf(os.Stderr, "volback: %s\n", p.Notice)
		return
	}
	if !b.on || p.Total <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.now()
	if !b.based {
		b.baseAt, b.baseDone, b.based = t, p.Done, true
	}
	if b.drawn && t.Sub(b.drawnAt) < redrawEvery && p.Done < p.Total {
		return
	}
	fmt.Fprintf(b.out, "\r%s\x1b[K", b.line(p, t))
	b.drawnAt, b.drawn = t, true
}

// line is one frame: "backup  1.2 GiB / 4.0 GiB  30%  450 MiB/s  0:07 left".
func (b *bar) line(p service.Progress, t time.Time) string {
	done := min(max(p.Done, 0), p.Total)
	s := fmt.Sprintf("%s  %s / %s  %3d%%", p.Phase, humanBytes(done), humanBytes(p.Total), done*100/p.Total)
	el := t.Sub(b.baseAt)
	if moved := done - b.baseDone; moved > 0 && el >= minRateWindow {
		rate := float64(moved) / el.Seconds()
		left := time.Duration(float64(p.Total-done) / rate * float64(time.Second))
		s += fmt.Sprintf("  %s/s  %s left", humanBytes(int64(rate)), clock(left))
	}
	return s
}

func (b *bar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprint(b.out, "\r\x1b[K") // the result follows on a clean line
		b.drawn = false
	}
}

// humanBytes is n in IEC units with three significant digits: 512 B,
// 1.50 KiB, 12.3 MiB, 456 GiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / 1024
	u := 0
	for v >= 1000 && u < len(units)-1 {
		v /= 1024
		u++
	}
	prec := 2
	if v >= 100 {
		prec = 0
	} else if v >= 10 {
		prec = 1
	}
	return fmt.Sprintf("%.*f %s", prec, v, units[u])
}

// clock is d as h:mm:ss or m:ss.
func clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
