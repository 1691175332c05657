package main

import (
	"fmt"
	"log"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"github.com/volback/volback/service"
	"golang.org/x/term"
)

// connect loads the config of the home and returns a caller: a client of
// the catalog's owner, or this process as the owner. Either way it follows
// hand-overs when the owner exits.
func connect(c *cli.Context) (service.Caller, error) {
	cfg, err := homeConfig(c)
	if err != nil {
		return nil, err
	}
	return service.Connect(c.Context, cfg, log.New(os.Stderr, "volback: ", 0))
}

// homeConfig loads the config of the chosen home.
func homeConfig(c *cli.Context) (service.Config, error) {
	home := c.String("home")
	if home == "" {
		home = service.DefaultHome()
	}
	return service.LoadConfig(home)
}

// call runs verb and prints its result in the chosen format.
func call(c *cli.Context, verb string, req, resp any) error {
	caller, err := connect(c)
	if err != nil {
		return err
	}
	defer caller.Close()
	bar := newBar(c)
	err = caller.Call(service.WithProject(c.Context, c.String("project")), verb, req, resp, bar.update)
	bar.finish()
	if err != nil {
		return err
	}
	return print(os.Stdout, c.String("format"), resp, verbFields[verb]...)
}

// bar draws progress on a terminal only.
type bar struct {
	mu sync.Mutex
	pb *progressbar.ProgressBar
	on bool
}

func newBar(c *cli.Context) *bar {
	return &bar{on: !c.Bool("quiet") && term.IsTerminal(int(os.Stderr.Fd()))}
}

func (b *bar) update(p service.Progress) {
	if !b.on || p.Total <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb == nil {
		b.pb = progressbar.NewOptions64(p.Total,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(p.Phase),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100e6),
			progressbar.OptionClearOnFinish())
	}
	b.pb.Set64(p.Done)
}

func (b *bar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb != nil {
		b.pb.Finish()
		fmt.Fprint(os.Stderr, "")
	}
}
