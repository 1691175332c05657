//go:build ceph

package rados

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/ceph/go-ceph/rados"

	"github.com/volback/volback/drivers/repo"
)

// rootIndex holds top-level names and a "dir/" marker for every top-level
// directory; each directory's names are in the omap of dirIndex(dir).
const rootIndex = reserved + "index"

// indexPage is how many index keys one read returns (a variable so tests
// can make listings cross pages).
var indexPage = 1000

func dirIndex(dir string) string { return rootIndex + "." + dir }

// indexOf returns the index object holding name and, for a name below a
// directory, that directory.
func indexOf(name string) (oid, dir string) {
	dir, _, found := strings.Cut(name, "/")
	if !found {
		return rootIndex, ""
	}
	return dirIndex(dir), dir
}

// setEntry writes name's index entry, registering its directory in the
// root index first (once per directory and connection).
func (b *Backend) setEntry(name string, e entry) error {
	oid, dir := indexOf(name)
	if dir != "" {
		b.dirsMu.Lock()
		known := b.dirs[dir]
		b.dirsMu.Unlock()
		if !known {
			if err := b.io.SetOmap(rootIndex, map[string][]byte{dir + "/": nil}); err != nil {
				return err
			}
			b.dirsMu.Lock()
			b.dirs[dir] = true
			b.dirsMu.Unlock()
		}
	}
	return b.io.SetOmap(oid, map[string][]byte{name: e.encode()})
}

func (b *Backend) rmEntry(name string) error {
	oid, _ := indexOf(name)
	err := b.io.RmOmapKeys(oid, []string{name})
	if errors.Is(err, rados.ErrNotFound) {
		return nil
	}
	return err
}

// readIndexPage returns up to max keys of an index object after `after`
// that start with prefix; a missing index object is an empty one.
func (b *Backend) readIndexPage(oid, after, prefix string, max int) (map[string][]byte, error) {
	kv, err := b.io.GetOmapValues(oid, after, prefix, int64(max))
	if errors.Is(err, rados.ErrNotFound) {
		return nil, nil
	}
	return kv, err
}

// eachKey calls fn for every key of an index object starting with prefix,
// in key order, a page at a time.
func (b *Backend) eachKey(ctx context.Context, oid, prefix string, fn func(key string, val []byte) error) error {
	after := ""
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		kv, err := b.readIndexPage(oid, after, prefix, indexPage)
		if err != nil {
			return b.opErr("list (index", oid+")", err)
		}
		keys := make([]string, 0, len(kv))
		for k := range kv {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := fn(k, kv[k]); err != nil {
				return err
			}
		}
		if len(kv) < indexPage {
			return nil
		}
		after = keys[len(keys)-1]
	}
}

// List reads the index. Committed entries are reported as they are;
// pending (or unreadable) ones are checked against the object and skipped
// when it is not there.
func (b *Backend) List(ctx context.Context, prefix string, fn func(repo.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	report := func(name string, val []byte) error {
		e, err := decodeEntry(val)
		if err == nil && !e.pending {
			return fn(repo.Info{Name: name, Size: e.size, ModTime: e.modTime})
		}
		info, err := b.Stat(ctx, name)
		if errors.Is(err, repo.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(info)
	}
	if oid, dir := indexOf(prefix); dir != "" {
		return b.eachKey(ctx, oid, prefix, report)
	}
	return b.eachKey(ctx, rootIndex, prefix, func(key string, val []byte) error {
		if dir, isDir := cutDir(key); isDir {
			return b.eachKey(ctx, dirIndex(dir), dir+"/", report)
		}
		return report(key, val)
	})
}

// cutDir tells a root index key that marks a directory ("packs/") from a
// top-level name.
func cutDir(key string) (dir string, isDir bool) { return strings.CutSuffix(key, "/") }
