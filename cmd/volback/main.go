// Command volback backs up block volumes into deduplicating repositories,
// with OpenStack Cinder's verbs. It parses, calls the service, prints.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/service"
)

func main() {
	dropCodePages()
	setMemoryLimit(service.BaseMemoryLimit) // until the configuration is read (connect)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := app()
	argv, verb, err := normalize(a, os.Args)
	if err == nil {
		err = a.RunContext(ctx, argv)
	}
	stopProfile()
	if err == nil {
		return
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// The same words whether the job ran here or in the catalog's owner
		// (whose own error never reaches a client that hung up).
		err = fmt.Errorf("%s cancelled by the user", verb)
	}
	fmt.Fprintf(os.Stderr, "volback: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprint(os.Stderr, usageHint(a, ue.verb))
		os.Exit(2)
	}
	os.Exit(1)
}

// setMemoryLimit sets the soft memory limit, which keeps the heap (and so
// peak RSS) bounded whatever the volume size, unless GOMEMLIMIT is set.
func setMemoryLimit(n int64) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(n)
	}
}

// globalFlags are accepted before or after the verb.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "home", EnvVars: []string{"VOLBACK_HOME"},
			Usage: "state `DIR`: catalog, config, default repository, socket (default /var/lib/volback for root, else $XDG_DATA_HOME/volback)"},
		&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table", Usage: "output `FORMAT`: table or json"},
		&cli.StringFlag{Name: "project", EnvVars: []string{"VOLBACK_PROJECT"}, Usage: "act for `PROJECT` (admins only; default: your own)"},
		&cli.StringFlag{Name: "os-project-id", EnvVars: []string{"OS_PROJECT_ID"},
			Usage: "Cinder's spelling of --project (`PROJECT`); both given must agree"},
		&cli.StringFlag{Name: "password-file", EnvVars: []string{"VOLBACK_PASSWORD_FILE"},
			Usage: "read the passphrase of encrypted repositories from `FILE` (else from VOLBACK_PASSWORD; never on the command line)"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"},
		&cli.StringFlag{Name: "os-endpoint", EnvVars: []string{"OS_VOLUME_ENDPOINT"},
			Usage: "call the volback serve at `URL` (http://HOST:8776/v3) over HTTP, with OS_AUTH_TOKEN or noauth's OS_USER_ID"},
	}
}

func app() *cli.App {
	a := &cli.App{
		Name:  "volback",
		Usage: "block-volume backups with Cinder's verbs: deduplicated, compressed, mountable",
		Flags: globalFlags(),
		Before: func(c *cli.Context) error {
			if p := os.Getenv("VOLBACK_CPUPROFILE"); p != "" {
				startProfile(p)
			}
			if p := os.Getenv("VOLBACK_TRACE"); p != "" {
				startTrace(p)
			}
			if p := os.Getenv("VOLBACK_MEMPROFILE"); p != "" {
				startMemProfile(p)
			}
			return checkGlobals(c)
		},
		Commands: append(commands(), helpCommand(), versionCommand(), completionCommand(), manCommand()),
		// volback prints help and usage itself (help.go), always to the
		// stream the user expects: help asked for on stdout, usage errors
		// on stderr.
		HideHelp:       true,
		HideVersion:    true,
		ExitErrHandler: func(*cli.Context, error) {}, // main prints errors and picks the status
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError{flagSpelling(err), ""}
		},
	}
	for _, cmd := range a.Commands {
		name := cmd.Name
		cmd.HideHelp = true
		cmd.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
			return usageError{flagSpelling(err), name}
		}
	}
	return a
}

// flagSpelling writes the long flags in the errors of Go's flag package
// ("invalid boolean value "x" for -quiet") as volback spells them (--quiet).
func flagSpelling(err error) error {
	return errors.New(longFlag.ReplaceAllString(err.Error(), "$1--$2"))
}

var longFlag = regexp.MustCompile(`(^|\s)-([a-z][a-z-]+)`)
