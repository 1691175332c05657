package service

import (
	"strings"

	"github.com/volback/volback/index"
)

// named is what resolve needs of a volume or backup.
type named interface{ ident() (id, name string) }

type volRef struct{ *index.Volume }
type bakRef struct{ *index.Backup }

func (v volRef) ident() (string, string) { return v.ID, v.Name }
func (b bakRef) ident() (string, string) { return b.ID, b.Name }

// resolve picks the one item that ref names: an exact id, else a unique
// name, else a unique id prefix of at least 4 characters. kind and listVerb
// make the errors say what to run.
func resolve[T named](items []T, ref, kind, listVerb string) (T, error) {
	var zero T
	if ref == "" {
		return zero, errorf(ErrUsage, "no %s named; give a %s name or id (see 'volback %s')", kind, kind, listVerb)
	}
	var byName, byPrefix []T
	for _, it := range items {
		id, name := it.ident()
		if id == ref {
			return it, nil
		}
		if name == ref {
			byName = append(byName, it)
		}
		if len(ref) >= 4 && strings.HasPrefix(id, ref) {
			byPrefix = append(byPrefix, it)
		}
	}
	for _, cands := range [][]T{byName, byPrefix} {
		switch len(cands) {
		case 0:
			continue
		case 1:
			return cands[0], nil
		default:
			ids := make([]string, len(cands))
			for i, c := range cands {
				ids[i], _ = c.ident()
			}
			return zero, errorf(ErrUsage, "%s %q is ambiguous: it matches %s; name it by id", kind, ref, strings.Join(ids, ", "))
		}
	}
	return zero, errorf(ErrNotFound, "%s %q not found; run 'volback %s' to see them", kind, ref, listVerb)
}

// findVolume resolves ref among the volumes who may see: another
// project's volume is not found, as in Cinder.
func findVolume(tx *index.Tx, who Identity, ref string) (*index.Volume, error) {
	vols, err := tx.Volumes()
	if err != nil {
		return nil, err
	}
	var refs []volRef
	for _, v := range vols {
		if who.sees(v.ProjectID) {
			refs = append(refs, volRef{v})
		}
	}
	r, err := resolve(refs, ref, "volume", "list")
	return r.Volume, err
}

// findBackup resolves ref among the backups who may see.
func findBackup(tx *index.Tx, who Identity, ref string) (*index.Backup, error) {
	baks, err := tx.Backups()
	if err != nil {
		return nil, err
	}
	var refs []bakRef
	for _, b := range baks {
		if who.sees(b.ProjectID) {
			refs = append(refs, bakRef{b})
		}
	}
	r, err := resolve(refs, ref, "backup", "backup-list")
	return r.Backup, err
}
