package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// manCommand prints volback(1); `make man` and `make install` use it.
// Hidden: it is for packaging, and `man volback` is how users read it.
func manCommand() *cli.Command {
	return &cli.Command{Name: "man", Usage: "print the volback(1) man page (roff)", Hidden: true,
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			writeMan(os.Stdout, c.App)
			return nil
		}}
}

// writeMan writes the man page: one section per verb category and one
// subsection per verb, all from the command definitions.
func writeMan(w io.Writer, a *cli.App) {
	p := func(format string, v ...any) { fmt.Fprintf(w, format+"\n", v...) }
	p(`.TH VOLBACK 1 "" "volback %s" "User Commands"`, roff(buildVersion().Version))
	p(".SH NAME")
	p(`volback \- %s`, roff(a.Usage))
	p(".SH SYNOPSIS")
	p(".B volback")
	p(`[\fIglobal options\fR] \fIVERB\fR [\fIoptions\fR] [\fIarguments\fR]`)
	p(".SH DESCRIPTION")
	p("%s", roff("volback backs up block volumes (image files, block devices) into deduplicating, compressed repositories "+
		"with OpenStack Cinder's verbs and shows every backup as a read-only image in a FUSE mount. "+
		"The first volback process to open a home's catalog owns it and answers the others on a unix socket in the home, "+
		"so any number of volback commands can run at once."))
	p(".PP")
	p("%s", roff("Global options may come before or after the verb, and a verb's options before or after its arguments; "+
		"`--` ends the options. Every verb prints a table, or JSON with -f json; errors go to stderr."))
	p(".SH GLOBAL OPTIONS")
	manFlags(w, a.Flags)
	for _, cat := range categories(a) {
		p(`.SH "%s"`, roff(strings.ToUpper(cat.name)))
		for _, c := range cat.verbs {
			p(".SS %s", roff(c.Name))
			p(".B %s", roff(synopsis(c)))
			p(".PP")
			p("%s", roff(capitalize(c.Usage)+"."))
			if c.Description != "" {
				p(".PP")
				p("%s", roff(c.Description))
			}
			if len(visibleFlags(c.Flags)) > 0 {
				manFlags(w, c.Flags)
			}
		}
	}
	p(".SH NAMES")
	p("%s", roff(nameHelp+" An ambiguous name or prefix is refused, listing the candidates."))
	p(".SH EXIT STATUS")
	p(".TP\n.B 0\nsuccess.")
	p(".TP\n.B 1\n%s", roff("the verb failed; stderr says what failed and what to do."))
	p(".TP\n.B 2\n%s", roff("usage error (unknown verb or option, wrong arguments); the verb's usage follows on stderr and stdout stays empty."))
	p(".SH ENVIRONMENT")
	for _, e := range [][2]string{
		{"VOLBACK_HOME, VOLBACK_PROJECT, OS_PROJECT_ID, VOLBACK_PASSWORD_FILE", "defaults for --home, --project, --os-project-id and --password-file."},
		{"GOMEMLIMIT", "overrides the soft memory limit volback sizes from its configuration."},
		{"VOLBACK_CPUPROFILE", "write a CPU profile of the run to this file, for go tool pprof."},
		{"VOLBACK_TRACE", "write an execution trace of the run to this file, for go tool trace (-pprof=sync shows where the pipeline waits)."},
		{"VOLBACK_MEMPROFILE", "write a heap profile to this file each time the live heap reaches a new high, for go tool pprof."},
	} {
		p(".TP\n.B %s\n%s", roff(e[0]), roff(e[1]))
	}
	p(".SH FILES")
	for _, f := range [][2]string{
		{"HOME/volback.toml", "optional configuration: compression_level, workers, chunk_size, default_availability_zone, [zones.NAME] repository."},
		{"HOME/catalog", "the catalog (Badger)."},
		{"HOME/repository", "the default zone's repository."},
		{"HOME/volback.sock", "the catalog owner's socket."},
	} {
		p(".TP\n.I %s\n%s", roff(f[0]), roff(f[1]))
	}
	p("%s", roff("HOME is /var/lib/volback for root, else $XDG_DATA_HOME/volback (~/.local/share/volback)."))
	p(".SH SEE ALSO")
	p(`.BR umount (8),`)
	p(`.BR fusermount3 (1),`)
	p(`.BR losetup (8);`)
	p("%s", roff("docs/CLI.md and docs/FORMAT.md in the volback sources."))
}

func manFlags(w io.Writer, flags []cli.Flag) {
	for _, f := range visibleFlags(flags) {
		fmt.Fprintf(w, ".TP\n.B %s\n%s\n", roff(flagSpec(f)), roff(flagText(f)))
	}
}

// roff escapes text for a man page line: backslashes and dashes, and a
// control character at the start of the line.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	s = strings.ReplaceAll(s, "`", "")
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
