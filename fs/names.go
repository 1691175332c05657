package fs

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// TimeFormat is how a backup's creation time (UTC) starts its by-volume file
// name. No ':' so the names survive copying to filesystems that refuse it.
const TimeFormat = "2006-01-02T15-04-05Z"

const (
	imgExt = ".img"
	// maxNameBytes keeps a name part (volume, backup name, id) well below the
	// 255-byte limit for one path component once the time and suffixes are added.
	maxNameBytes = 200
	// idPrefixLen is how much of the id tells duplicate by-volume names apart.
	idPrefixLen = 8
)

// sanitizeName makes s usable as one path component: '/' and NUL become
// '_', the special names "", "." and ".." are replaced, and very long names
// are cut on a rune boundary.
func sanitizeName(s string) string {
	// Bytewise, so names that are not valid UTF-8 keep their bytes (Linux
	// allows them) instead of growing into U+FFFD replacements.
	b := []byte(s)
	for i, c := range b {
		if c == '/' || c == 0 {
			b[i] = '_'
		}
	}
	if len(b) > maxNameBytes {
		cut := maxNameBytes
		for cut > maxNameBytes-utf8.UTFMax && !utf8.RuneStart(b[cut]) {
			cut--
		}
		b = b[:cut]
	}
	switch s = string(b); s {
	case "":
		return "_"
	case ".", "..":
		return strings.Repeat("_", len(s))
	}
	return s
}

// cutBytes cuts s to at most n bytes on a rune boundary.
func cutBytes(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// volumeFileBase is the by-volume file name of e without the ".img"
// extension and without a duplicate suffix.
func volumeFileBase(e *Entry) string {
	n := e.Name
	if n == "" {
		n = e.ID
	}
	return e.CreatedAt.UTC().Format(TimeFormat) + "_" + sanitizeName(n)
}

// inodeOf derives a stable inode number from a kind and a key, so a backup
// keeps its inode across listings, lookups and both trees (which lets the
// kernel keep its page cache for it). 0 and 1 (root) are never returned.
func inodeOf(kind, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(key))
	ino := h.Sum64()
	if ino < 16 {
		ino += 16
	}
	return ino
}

func backupIno(id string) uint64  { return inodeOf("backup", id) }
func volumeIno(dir string) uint64 { return inodeOf("volume", dir) }

// listing is one snapshot of Source.Backups arranged as the mount shows it.
type listing struct {
	byID     map[string]*Entry // by-id file name -> entry
	idNames  []string          // sorted
	volumes  map[string]*volumeDir
	volNames []string // sorted
}

type volumeDir struct {
	name   string
	files  map[string]*Entry // file name -> entry
	names  []string          // sorted
	newest time.Time
}

// newListing arranges entries. Names are deterministic and stable as backups
// come and go: within a volume directory the oldest backup (then lowest id)
// keeps the plain name and later ones with the same name get "_<id-prefix>",
// so a new backup never renames an existing file.
func newListing(entries []Entry) *listing {
	es := make([]*Entry, len(entries))
	for i := range entries {
		es[i] = &entries[i]
	}
	sort.Slice(es, func(i, j int) bool {
		if !es[i].CreatedAt.Equal(es[j].CreatedAt) {
			return es[i].CreatedAt.Before(es[j].CreatedAt)
		}
		return es[i].ID < es[j].ID
	})
	l := &listing{byID: make(map[string]*Entry, len(es)), volumes: make(map[string]*volumeDir)}
	dirOf := map[string]*volumeDir{} // volume key -> its directory
	for _, e := range es {
		idName := sanitizeName(e.ID) + imgExt
		if _, dup := l.byID[idName]; !dup {
			l.byID[idName] = e
			l.idNames = append(l.idNames, idName)
		}

		d := l.volumeDir(e, dirOf)
		base := volumeFileBase(e)
		name := base + imgExt
		if _, dup := d.files[name]; dup {
			id := sanitizeName(e.ID)
			name = base + "_" + id[:min(len(id), idPrefixLen)] + imgExt
			if _, dup := d.files[name]; dup {
				name = base + "_" + id + imgExt
			}
			if _, dup := d.files[name]; dup {
				continue // same id listed twice: show it once
			}
		}
		d.files[name] = e
		d.names = append(d.names, name)
		if e.CreatedAt.After(d.newest) {
			d.newest = e.CreatedAt
		}
	}
	sort.Strings(l.idNames)
	sort.Strings(l.volNames)
	for _, d := range l.volumes {
		sort.Strings(d.names)
	}
	return l
}

// volumeDir returns the by-volume directory of e's volume, making it on
// first sight. Volumes are told apart by id: the first one seen with a name
// (the one with the oldest backup) gets the plain name, and another volume
// of the same name gets "<name>-<id prefix>" (the whole id if that is
// taken too), so two volumes never share a directory.
func (l *listing) volumeDir(e *Entry, dirOf map[string]*volumeDir) *volumeDir {
	key := e.VolumeID
	if key == "" {
		key = "\x00" + e.VolumeName // no id (tests, old owners): by name
	}
	if d := dirOf[key]; d != nil {
		return d
	}
	base := sanitizeName(e.VolumeName)
	id := sanitizeName(e.VolumeID)
	name := base
	for n := 0; l.volumes[name] != nil; n++ {
		suffix := "-" + id[:min(len(id), idPrefixLen)]
		if n == 1 {
			suffix = "-" + id
		} else if n > 1 {
			suffix = fmt.Sprintf("-%d", n) // only for ids alike in their first 200 bytes
		}
		name = sanitizeName(cutBytes(base, maxNameBytes-len(suffix)) + suffix)
	}
	d := &volumeDir{name: name, files: make(map[string]*Entry)}
	l.volumes[name] = d
	l.volNames = append(l.volNames, name)
	dirOf[key] = d
	return d
}

// catalog caches Source.Backups for ttl so that `ls -l` storms (a LOOKUP
// per entry) cost one catalog query, while new and deleted backups still
// show up within about ttl.
type catalog struct {
	src Source
	ttl time.Duration

	mu  sync.Mutex // held across a refresh so concurrent callers share it
	at  time.Time
	cur *listing
}

func (c *catalog) get(ctx context.Context) (*listing, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && time.Since(c.at) < c.ttl {
		return c.cur, nil
	}
	entries, err := c.src.Backups(ctx)
	if err != nil {
		return nil, err
	}
	c.cur, c.at = newListing(entries), time.Now()
	return c.cur, nil
}
