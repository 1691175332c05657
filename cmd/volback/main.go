// Command volback backs up block volumes into deduplicating repositories,
// with OpenStack Cinder's verbs. It parses, calls the service, prints.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"
)

// usageError marks errors in how volback was called (exit status 2).
type usageError struct{ error }

// softMemoryLimit keeps the heap (and so peak RSS) bounded whatever the
// volume size; GOMEMLIMIT overrides it. `mount` raises it by its cache size.
const softMemoryLimit = 64 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(softMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := app().RunContext(ctx, os.Args)
	stopProfile()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "volback: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}

func app() *cli.App {
	return &cli.App{
		Name:  "volback",
		Usage: "block-volume backups with Cinder's verbs: deduplicated, compressed, mountable",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "home", EnvVars: []string{"VOLBACK_HOME"}, Usage: "state directory (catalog, config, default repository)"},
			&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table", Usage: "output format: table or json"},
			&cli.StringFlag{Name: "project", EnvVars: []string{"VOLBACK_PROJECT"}, Usage: "act for this project (admins only; default: your own)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"},
		},
		Before: func(c *cli.Context) error {
			if p := os.Getenv("VOLBACK_CPUPROFILE"); p != "" {
				startProfile(p)
			}
			if f := c.String("format"); f != "table" && f != "json" {
				return usageError{fmt.Errorf("unknown --format %q: use table or json", f)}
			}
			return nil
		},
		Commands:        commands(),
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // main prints errors and picks the status
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError{fmt.Errorf("%v; see 'volback %s --help'", err, c.Command.Name)}
		},
	}
}
