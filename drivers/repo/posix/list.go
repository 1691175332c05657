package posix

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/volback/volback/drivers/repo"
)

// List walks the directory tree, pruning directories that cannot hold names
// with the prefix, and reports logical (unsharded) names. Temp files of
// in-flight or crashed Puts are skipped.
func (b *Backend) List(ctx context.Context, prefix string, fn func(repo.Info) error) error {
	err := filepath.WalkDir(b.root, func(path string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if path == b.root {
			return nil
		}
		rel, err := filepath.Rel(b.root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			lp := dirNamePrefix(rel)
			if strings.HasPrefix(lp, prefix) || strings.HasPrefix(prefix, lp) {
				return nil
			}
			return fs.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		name, ok := logical(rel)
		if !ok || !strings.HasPrefix(name, prefix) {
			return nil
		}
		st, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(repo.Info{Name: name, Size: st.Size(), ModTime: st.ModTime()})
	})
	return err
}

// dirNamePrefix is the prefix every object name stored below directory rel
// starts with. A shard directory "packs/ab" holds "packs/ab...".
func dirNamePrefix(rel string) string {
	if rest, ok := strings.CutPrefix(rel, packsDir); ok && !strings.Contains(rest, "/") {
		return packsDir + rest
	}
	return rel + "/"
}
