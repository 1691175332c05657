package repo

import (
	"fmt"
	"strings"
)

// CheckName refuses object names a driver could not store and list back
// under the same name: empty, absolute, with empty, "." or ".." elements,
// a trailing slash, a backslash or a NUL byte. Drivers with a storage
// layout of their own (posix's pack shards) add their own rules.
func CheckName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("invalid object name %q: %s (names are relative slash-separated paths like \"packs/<hex>\")", name, why)
	}
	switch {
	case name == "":
		return bad("empty")
	case strings.HasPrefix(name, "/"):
		return bad("absolute path")
	case strings.ContainsAny(name, "\\\x00"):
		return bad("contains a backslash or NUL byte")
	}
	for _, el := range strings.Split(name, "/") {
		switch el {
		case "":
			return bad("empty path element")
		case ".", "..":
			return bad("contains a . or .. element")
		}
	}
	return nil
}
