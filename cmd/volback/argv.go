package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// usageError marks errors in how volback was called: exit status 2, and
// main prints the verb's usage (all verbs' when verb is "") on stderr.
type usageError struct {
	error
	verb string
}

func (e usageError) Unwrap() error { return e.error }

// normalize rewrites argv into the one shape urfave/cli parses the same way
// every time,
//
//	volback GLOBAL-FLAGS... VERB VERB-FLAGS... -- ARGUMENTS...
//
// so that global flags work before or after the verb and a verb's flags
// after its arguments (`backup-create db --incremental -f json`). It
// refuses an unknown verb or flag (suggesting near misses), a flag without
// its value and a missing required flag, all as usage errors, before
// anything runs. -h/--help anywhere becomes `help [VERB]`, --version
// becomes `version`. It returns the verb's name for messages.
func normalize(a *cli.App, argv []string) (out []string, verb string, err error) {
	globals := flagIndex(a.Flags)
	var (
		cmd           *cli.Command
		gl, vf, pos   []string
		help, version bool
		firstErr      error
	)
	fail := func(e error) {
		if firstErr == nil {
			firstErr = e
		}
	}
	positional := func(tok string) bool {
		if cmd != nil {
			pos = append(pos, tok)
			return true
		}
		if cmd = a.Command(tok); cmd == nil {
			fail(usageError{fmt.Errorf("unknown verb %q%s", tok, didYouMean(tok, verbNames(a))), ""})
			return false
		}
		return true
	}
	rest := argv[1:]
scan:
	for i := 0; i < len(rest); i++ {
		tok := rest[i]
		switch {
		case tok == "--":
			for _, p := range rest[i+1:] {
				if !positional(p) {
					break scan
				}
			}
			break scan
		case tok == "-h" || tok == "--help":
			help = true
			continue
		case tok == "--version":
			version = true
			continue
		case !strings.HasPrefix(tok, "-") || tok == "-":
			if !positional(tok) {
				break scan
			}
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(tok, "-"), "-"), "=")
		f, global := globals[name], true
		if cmd != nil {
			if vfl, ok := flagIndex(cmd.Flags)[name]; ok && !strings.HasPrefix(tok, "---") {
				f, global = vfl, false
			}
		}
		if f == nil || strings.HasPrefix(tok, "---") || name == "" {
			fail(unknownFlag(a, cmd, tok, name))
			continue
		}
		if takesValue(f) && !hasVal {
			if i+1 >= len(rest) {
				fail(usageError{fmt.Errorf("option %s needs a value (%s)", tok, placeholder(f)), cmdName(cmd)})
				continue
			}
			i++
			val, hasVal = rest[i], true
		}
		norm := "--" + f.Names()[0]
		if hasVal {
			norm += "=" + val
		}
		if global {
			gl = append(gl, norm)
		} else {
			vf = append(vf, norm)
		}
	}
	switch {
	case help:
		out = append(append([]string{argv[0]}, gl...), "help")
		if cmd != nil && cmd.Name != "help" {
			out = append(out, cmd.Name)
		} else if cmd != nil && len(pos) > 0 {
			out = append(out, pos[0])
		}
		return out, "help", nil
	case firstErr != nil:
		return nil, cmdName(cmd), firstErr
	case version:
		return append(append([]string{argv[0]}, gl...), "version"), "version", nil
	case cmd == nil:
		return nil, "", usageError{fmt.Errorf("no verb given"), ""}
	}
	if err := checkRequired(cmd, vf); err != nil {
		return nil, cmd.Name, err
	}
	out = append([]string{argv[0]}, gl...)
	out = append(append(append(out, cmd.Name), vf...), "--")
	return append(out, pos...), cmd.Name, nil
}

// unknownFlag says which flags there are near the one given.
func unknownFlag(a *cli.App, cmd *cli.Command, tok, name string) error {
	var cands []string
	for _, f := range a.Flags {
		cands = append(cands, dashed(f.Names())...)
	}
	what := "unknown global option " + tok
	if cmd != nil {
		what = cmd.Name + " has no option " + tok
		for _, f := range cmd.Flags {
			cands = append(cands, dashed(f.Names())...)
		}
	} else {
		// A verb's option before the verb: say where it belongs.
		for _, c := range a.VisibleCommands() {
			if _, ok := flagIndex(c.Flags)[name]; ok {
				return usageError{fmt.Errorf("%s is not a global option; verb options go after the verb (volback VERB %s ...)", tok, tok), ""}
			}
		}
	}
	return usageError{fmt.Errorf("%s%s", what, didYouMean(tok, cands)), cmdName(cmd)}
}

// checkRequired refuses a verb called without one of its required flags.
func checkRequired(cmd *cli.Command, given []string) error {
	for _, f := range cmd.Flags {
		if r, ok := f.(cli.RequiredFlag); !ok || !r.IsRequired() {
			continue
		}
		found := false
		for _, g := range given {
			n, _, _ := strings.Cut(strings.TrimPrefix(g, "--"), "=")
			for _, fn := range f.Names() {
				found = found || n == fn
			}
		}
		if !found {
			return usageError{fmt.Errorf("%s needs --%s %s", cmd.Name, f.Names()[0], placeholder(f)), cmd.Name}
		}
	}
	return nil
}

func flagIndex(flags []cli.Flag) map[string]cli.Flag {
	m := make(map[string]cli.Flag)
	for _, f := range flags {
		for _, n := range f.Names() {
			m[n] = f
		}
	}
	return m
}

func takesValue(f cli.Flag) bool {
	d, ok := f.(cli.DocGenerationFlag)
	return ok && d.TakesValue()
}

func dashed(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = flagName(n)
	}
	return out
}

// flagName is how a flag is written: -f, --format.
func flagName(n string) string {
	if len(n) == 1 {
		return "-" + n
	}
	return "--" + n
}

func cmdName(c *cli.Command) string {
	if c == nil {
		return ""
	}
	return c.Name
}

func verbNames(a *cli.App) []string {
	var names []string
	for _, c := range a.VisibleCommands() {
		names = append(names, c.Name)
	}
	return names
}

// didYouMean is ` (did you mean X?)` for the candidates close to s: a
// typo or two away (transpositions count once), a prefix of it, or the verb
// without its "backup-" (restore -> backup-restore); "" when none is.
func didYouMean(s string, cands []string) string {
	var near []string
	for _, c := range cands {
		d := editDistance(s, c)
		limit := 1
		if len(s) >= 5 {
			limit = 2
		}
		if d <= limit || (len(s) >= 3 && strings.HasPrefix(c, s)) || strings.HasSuffix(c, "-"+strings.TrimLeft(s, "-")) {
			near = append(near, c)
		}
	}
	switch len(near) {
	case 0:
		return ""
	case 1:
		return "; did you mean " + near[0] + "?"
	}
	return "; did you mean " + strings.Join(near[:len(near)-1], ", ") + " or " + near[len(near)-1] + "?"
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each cost 1.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
