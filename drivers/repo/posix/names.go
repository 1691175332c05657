package posix

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/volback/volback/drivers/repo"
)

// tmpPrefix marks in-flight Put files (and the writability probe). List
// skips them and names may not use it, so a crash never exposes a partial
// object under a real name.
const tmpPrefix = ".tmp-"

// packsDir holds the packs; "packs/<hex>" is stored at "packs/<hex[0:2]>/<hex>"
// so no single directory grows to millions of entries.
const packsDir = "packs/"

// checkName refuses names repo.CheckName refuses, and names the sharded
// layout could not list back under the same name: elements starting with
// tmpPrefix, and pack names without a two-character shard.
func checkName(name string) error {
	if err := repo.CheckName(name); err != nil {
		return err
	}
	bad := func(why string) error {
		return fmt.Errorf("invalid object name %q: %s (names are relative slash-separated paths like \"packs/<hex>\")", name, why)
	}
	for _, el := range strings.Split(name, "/") {
		if strings.HasPrefix(el, tmpPrefix) {
			return bad("elements starting with " + tmpPrefix + " are reserved for temporary files")
		}
	}
	if rest, ok := strings.CutPrefix(name, packsDir); ok {
		if len(rest) < 2 || strings.Contains(rest, "/") || !alnum(rest[0]) || !alnum(rest[1]) {
			return bad("pack names are \"packs/<id>\" with an id of at least 2 characters, starting with two letters or digits (the shard directory), and no further slash")
		}
	}
	return nil
}

// physical maps a (checked) logical name to its file path under root.
func physical(root, name string) string {
	if rest, ok := strings.CutPrefix(name, packsDir); ok {
		return filepath.Join(root, "packs", rest[:2], rest)
	}
	return filepath.Join(root, filepath.FromSlash(name))
}

// logical maps a slash path relative to root back to its object name; ok is
// false for files that are not objects (temp files, stray files in packs/).
func logical(rel string) (string, bool) {
	base := rel[strings.LastIndexByte(rel, '/')+1:]
	if strings.HasPrefix(base, tmpPrefix) {
		return "", false
	}
	if rest, ok := strings.CutPrefix(rel, packsDir); ok {
		shard, id, found := strings.Cut(rest, "/")
		if !found || strings.Contains(id, "/") || len(id) < 2 || id[:2] != shard {
			return "", false
		}
		return packsDir + id, true
	}
	return rel, true
}

func alnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
