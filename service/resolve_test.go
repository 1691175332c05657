package service

import (
	"strings"
	"testing"

	"github.com/volback/volback/index"
)

// TestResolveOrder: an exact id wins over a name, a name over an id
// prefix; prefixes need MinIDPrefix characters; an ambiguous name or prefix
// is refused listing every candidate.
func TestResolveOrder(t *testing.T) {
	mk := func(id, name string) volRef { return volRef{&index.Volume{ID: id, Name: name}} }
	items := []volRef{
		mk("2aaa0000-0000-0000-0000-000000000001", "db"),
		mk("2aab0000-0000-0000-0000-000000000002", "2aaa0000-0000-0000-0000-000000000001x"),
		mk("3bbb0000-0000-0000-0000-000000000003", "2aaa"), // a name that is another id's prefix
		mk("4ccc0000-0000-0000-0000-000000000004", "twin"),
		mk("5ddd0000-0000-0000-0000-000000000005", "twin"),
		mk("6eee0000-0000-0000-0000-000000000006", "3bbb0000-0000-0000-0000-000000000003"), // a name equal to another's id
	}
	for _, c := range []struct {
		ref, want string   // want: id, or "" for a refusal
		words     []string // the refusal must name these
	}{
		{ref: "3bbb0000-0000-0000-0000-000000000003", want: "3bbb0000-0000-0000-0000-000000000003"}, // exact id beats a name
		{ref: "db", want: "2aaa0000-0000-0000-0000-000000000001"},
		{ref: "2aaa", want: "3bbb0000-0000-0000-0000-000000000003"}, // name beats id prefix
		{ref: "2aab", want: "2aab0000-0000-0000-0000-000000000002"},
		{ref: "4ccc", want: "4ccc0000-0000-0000-0000-000000000004"},
		{ref: "2aa", words: []string{"at least 4", "2aaa0000-0000-0000-0000-000000000001", "2aab0000-0000-0000-0000-000000000002"}},
		{ref: "2", words: []string{"at least 4", "2 id(s)"}},
		{ref: "4", words: []string{"at least 4", "4ccc0000-0000-0000-0000-000000000004"}},
		{ref: "2aa" + "a0", want: "2aaa0000-0000-0000-0000-000000000001"},
		{ref: "twin", words: []string{"ambiguous", "4ccc0000-0000-0000-0000-000000000004", "5ddd0000-0000-0000-0000-000000000005"}},
		{ref: "2a-x", words: []string{"not found", "volback list"}},
		{ref: "", words: []string{"no volume named"}},
	} {
		got, err := resolve(items, c.ref, "volume", "list")
		if c.want != "" {
			if err != nil || got.ID != c.want {
				t.Errorf("resolve(%q) = %v, %v; want %s", c.ref, got.Volume, err, c.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("resolve(%q) = %s, want a refusal", c.ref, got.ID)
			continue
		}
		for _, w := range c.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("resolve(%q): %v; want it to say %q", c.ref, err, w)
			}
		}
	}
	// An ambiguous prefix of 4+ characters lists the candidates.
	two := []volRef{mk("abcd1000", "x"), mk("abcd2000", "y")}
	if _, err := resolve(two, "abcd", "volume", "list"); err == nil || !strings.Contains(err.Error(), "ambiguous") ||
		!strings.Contains(err.Error(), "abcd1000") || !strings.Contains(err.Error(), "abcd2000") {
		t.Errorf("ambiguous prefix: %v", err)
	}
}
