package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/service"
)

// Help, the man page and the completion scripts are all written from the
// command definitions (verbs.go, main.go's globalFlags), so a new verb or
// flag shows up in each of them without further edits.

// nameHelp is how verbs find the volume or backup named (service/resolve.go).
var nameHelp = fmt.Sprintf("A volume or backup is named by its exact id, else its exact name, else a unique id prefix of at least %d characters.", service.MinIDPrefix)

// categoryOrder lists verb categories as help and the man page show them;
// a category not listed comes after these.
var categoryOrder = []string{"volumes", "snapshots", "backups", "projects and quotas", "repositories", "mount and service", "help"}

func helpCommand() *cli.Command {
	return &cli.Command{Name: "help", Usage: "show the verbs, or one verb's options", ArgsUsage: "[VERB]", Category: "help",
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 1, "[VERB]"); err != nil {
				return err
			}
			a := c.App
			if c.NArg() == 0 {
				writeAppHelp(os.Stdout, a)
				return nil
			}
			name := c.Args().First()
			cmd := a.Command(name)
			if cmd == nil {
				return usageError{fmt.Errorf("no verb %q%s", name, didYouMean(name, verbNames(a))), ""}
			}
			writeVerbHelp(os.Stdout, a, cmd)
			return nil
		}}
}

// usageHint is what follows a usage error on stderr.
func usageHint(a *cli.App, verb string) string {
	if cmd := a.Command(verb); cmd != nil {
		return fmt.Sprintf("usage: %s\nrun 'volback help %s' for its options\n", synopsis(cmd), cmd.Name)
	}
	return fmt.Sprintf("usage: volback [global options] VERB [options] [arguments]\nverbs: %s\nrun 'volback help' for more\n",
		strings.Join(verbNames(a), ", "))
}

func writeAppHelp(w io.Writer, a *cli.App) {
	fmt.Fprintf(w, "volback: %s\n\nusage: volback [global options] VERB [options] [arguments]\n", a.Usage)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, cat := range categories(a) {
		fmt.Fprintf(tw, "\n%s:\n", capitalize(cat.name))
		for _, c := range cat.verbs {
			fmt.Fprintf(tw, "  %s\t%s\n", c.Name, c.Usage)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nGlobal options (before or after the verb):")
	writeFlags(w, a.Flags)
	fmt.Fprintf(w, "\n%s\n'volback help VERB' shows a verb's options; 'man volback' is the whole manual.\n", nameHelp)
}

func writeVerbHelp(w io.Writer, a *cli.App, cmd *cli.Command) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", synopsis(cmd), cmd.Usage)
	if cmd.Description != "" {
		fmt.Fprintf(w, "\n%s\n", cmd.Description)
	}
	if len(visibleFlags(cmd.Flags)) > 0 {
		fmt.Fprintln(w, "\nOptions:")
		writeFlags(w, cmd.Flags)
	}
	var g []string
	for _, f := range visibleFlags(a.Flags) {
		g = append(g, flagSpec(f))
	}
	fmt.Fprintf(w, "\nGlobal options (before or after the verb; 'volback help'): %s\n", strings.Join(g, ", "))
}

func writeFlags(w io.Writer, flags []cli.Flag) {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, f := range visibleFlags(flags) {
		fmt.Fprintf(tw, "  %s\t%s\n", flagSpec(f), flagText(f))
	}
	tw.Flush()
}

type category struct {
	name  string
	verbs []*cli.Command
}

// categories groups the visible verbs, in categoryOrder, each in
// definition order.
func categories(a *cli.App) []category {
	idx := map[string]int{}
	var cats []category
	for _, n := range categoryOrder {
		idx[n] = len(cats)
		cats = append(cats, category{name: n})
	}
	for _, c := range a.VisibleCommands() {
		n := c.Category
		if n == "" {
			n = "other"
		}
		if _, ok := idx[n]; !ok {
			idx[n] = len(cats)
			cats = append(cats, category{name: n})
		}
		cats[idx[n]].verbs = append(cats[idx[n]].verbs, c)
	}
	extra := cats[len(categoryOrder):] // categories not in categoryOrder, by name
	sort.SliceStable(extra, func(i, j int) bool { return extra[i].name < extra[j].name })
	var out []category
	for _, c := range cats {
		if len(c.verbs) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// synopsis is `volback VERB --required X [--optional Y] ARGS`.
func synopsis(cmd *cli.Command) string {
	parts := []string{"volback", cmd.Name}
	for _, f := range visibleFlags(cmd.Flags) {
		s := flagName(f.Names()[0])
		if takesValue(f) {
			s += " " + placeholder(f)
		}
		if !required(f) {
			s = "[" + s + "]"
		}
		parts = append(parts, s)
	}
	if cmd.ArgsUsage != "" {
		parts = append(parts, cmd.ArgsUsage)
	}
	return strings.Join(parts, " ")
}

// flagSpec is "-f, --format FORMAT".
func flagSpec(f cli.Flag) string {
	names := append([]string(nil), f.Names()...)
	sort.SliceStable(names, func(i, j int) bool { return len(names[i]) < len(names[j]) })
	s := strings.Join(dashed(names), ", ")
	if takesValue(f) {
		s += " " + placeholder(f)
	}
	return s
}

// placeholder names a flag's value: the `quoted` word of its usage (as
// urfave/cli does), else the flag's name in capitals.
func placeholder(f cli.Flag) string {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		u := d.GetUsage()
		if i := strings.IndexByte(u, '`'); i >= 0 {
			if j := strings.IndexByte(u[i+1:], '`'); j > 0 {
				return u[i+1 : i+1+j]
			}
		}
	}
	return strings.ToUpper(strings.ReplaceAll(f.Names()[0], "-", "_"))
}

// flagText is a flag's usage with its default, environment variables and
// whether it is required.
func flagText(f cli.Flag) string {
	d, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return ""
	}
	s := strings.ReplaceAll(d.GetUsage(), "`", "")
	if required(f) {
		s += " (required)"
	}
	if def := d.GetDefaultText(); takesValue(f) && def != "" {
		s += " (default " + strings.Trim(def, `"`) + ")"
	}
	if env := d.GetEnvVars(); len(env) > 0 {
		s += " [$" + strings.Join(env, ", $") + "]"
	}
	return s
}

func required(f cli.Flag) bool {
	r, ok := f.(cli.RequiredFlag)
	return ok && r.IsRequired()
}

func visibleFlags(flags []cli.Flag) []cli.Flag {
	var out []cli.Flag
	for _, f := range flags {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		out = append(out, f)
	}
	return out
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
