package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	a := app()
	for _, c := range []struct {
		in   string
		want string // normalized argv after "volback", or "error: words" for a usage error
	}{
		{"list", "list --"},
		{"-f json list", "--format=json list --"},
		{"list -f json", "--format=json list --"},
		{"list --format=json -q", "--format=json --quiet list --"},
		{"backup-create db --incremental --home /h", "--home=/h backup-create --incremental -- db"},
		{"backup-create --name n db", "backup-create --name=n -- db"},
		{"backup-create --description -f db", "backup-create --description=-f -- db"}, // a value that looks like a flag
		{"backup-delete -- -odd-name other", "backup-delete -- -odd-name other"},
		{"-- list", "list --"},
		{"backup-create -h", "help backup-create"},
		{"--help", "help"},
		{"help --help", "help"},
		{"help list", "help -- list"},
		{"--version", "version"},
		{"-f json --version", "--format=json version"},
		{"umount -l /m", "umount --lazy -- /m"},
		{"", "error: no verb"},
		{"backup-craete db", "error: did you mean backup-create?"},
		{"restore b", "error: did you mean backup-restore?"},
		{"backup-create --incremantal db", "error: backup-create has no option --incremantal; did you mean --incremental?"},
		{"--nme x manage", "error: unknown global option --nme"},
		{"--name x manage src", "error: verb options go after the verb"},
		{"manage src", "error: manage needs --name NAME"},
		{"list --home", "error: option --home needs a value (DIR)"},
		{"list ---home x", "error: list has no option ---home"},
	} {
		var in []string
		if c.in != "" {
			in = strings.Fields(c.in)
		}
		out, _, err := normalize(a, append([]string{"volback"}, in...))
		if msg, isErr := strings.CutPrefix(c.want, "error: "); isErr {
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), msg) {
				t.Errorf("normalize(%q) = %q, %v; want a usage error saying %q", c.in, out, err, msg)
			}
			continue
		}
		if err != nil || !slices.Equal(out[1:], strings.Fields(c.want)) {
			t.Errorf("normalize(%q) = %q, %v; want %q", c.in, out, err, c.want)
		}
	}
}

// TestNoShadowedGlobals: a verb flag named like a global flag would make
// `VERB --that` mean something else after the verb than before it.
func TestNoShadowedGlobals(t *testing.T) {
	a := app()
	g := flagIndex(a.Flags)
	for _, c := range a.Commands {
		for _, f := range c.Flags {
			for _, n := range f.Names() {
				if _, ok := g[n]; ok {
					t.Errorf("verb %s has flag %s, which is also a global flag", c.Name, n)
				}
			}
		}
	}
}

func TestDidYouMean(t *testing.T) {
	verbs := verbNames(app())
	for in, want := range map[string]string{
		"backup-craete": "backup-create",
		"lsit":          "list",
		"bakcup-list":   "backup-list",
		"export":        "backup-export",
		"backup-de":     "backup-delete",
		"xyzzy":         "",
	} {
		got := didYouMean(in, verbs)
		if want == "" && got != "" || !strings.Contains(got, want) {
			t.Errorf("didYouMean(%q) = %q, want it to suggest %q", in, got, want)
		}
	}
	if d := editDistance("craete", "create"); d != 1 {
		t.Errorf("a swap costs %d, want 1", d)
	}
}
