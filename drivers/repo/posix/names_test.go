package posix

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzNames checks the name mapping on arbitrary input: an accepted name
// never escapes the root and lists back as itself; a refused one is never
// mapped.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"config", "packs/ab12", "packs/a", "packs/ab/cd", "backups/x", "../x", "a/./b", "/abs", "a\\b", ".tmp-1", "a//b", "packs/", "packs/.."} {
		f.Add(s)
	}
	const root = "/repo"
	f.Fuzz(func(t *testing.T, name string) {
		if checkName(name) != nil {
			return
		}
		p := physical(root, name)
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("name %q maps to %q, outside %s", name, p, root)
		}
		back, ok := logical(filepath.ToSlash(rel))
		if !ok || back != name {
			t.Fatalf("name %q stored at %q lists as %q (ok=%v)", name, rel, back, ok)
		}
	})
}
