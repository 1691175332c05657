package service

import (
	"fmt"
	"strings"

	"github.com/volback/volback/index"
)

// named is what resolve needs of a volume or backup.
type named interface{ ident() (id, name string) }

type volRef struct{ *index.Volume }
type bakRef struct{ *index.Backup }

func (v volRef) ident() (string, string) { return v.ID, v.Name }
func (b bakRef) ident() (string, string) { return b.ID, b.Name }

// MinIDPrefix is the shortest id prefix that names a volume or backup.
// Shorter refs are taken as names only: "db" or "1" should never quietly
// pick whichever id happens to start that way, and 4 hex digits already
// tell apart thousands of ids.
const MinIDPrefix = 4

// resolve picks the one item that ref names, in this order: an exact id,
// else an exact name, else a unique id prefix of at least MinIDPrefix
// characters. A name or prefix matching several items is refused with the
// candidates listed. kind and listVerb make the errors say what to run.
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
		if strings.HasPrefix(id, ref) {
			byPrefix = append(byPrefix, it)
		}
	}
	switch {
	case len(byName) == 1:
		return byName[0], nil
	case len(byName) > 1:
		return zero, errorf(ErrUsage, "%s name %q is ambiguous: it names %s; name it by id", kind, ref, idList(byName))
	case len(byPrefix) > 0 && len(ref) < MinIDPrefix:
		return zero, errorf(ErrNotFound, "%s %q not found: no %s has that name, and an id prefix needs at least %d characters (%d id(s) start with %q: %s)",
			kind, ref, kind, MinIDPrefix, len(byPrefix), ref, idList(byPrefix))
	case len(byPrefix) == 1:
		return byPrefix[0], nil
	case len(byPrefix) > 1:
		return zero, errorf(ErrUsage, "%s id prefix %q is ambiguous: it matches %s; give more of the id", kind, ref, idList(byPrefix))
	}
	return zero, errorf(ErrNotFound, "%s %q not found; run 'volback %s' to see them", kind, ref, listVerb)
}

// idList lists candidates' ids (at most 10) for a refusal.
func idList[T named](items []T) string {
	var ids []string
	for i, it := range items {
		if i == 10 {
			ids = append(ids, fmt.Sprintf("and %d more", len(items)-10))
			break
		}
		id, _ := it.ident()
		ids = append(ids, id)
	}
	return strings.Join(ids, ", ")
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
