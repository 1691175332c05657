package fs

import (
	"context"
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
	for _, e := range es {
		idName := sanitizeName(e.ID) + imgExt
		if _, dup := l.byID[idName]; !dup {
			l.byID[idName] = e
			l.idNames = append(l.idNames, idName)
		}

		dirName := sanitizeName(e.VolumeName)
		d := l.volumes[dirName]
		if d == nil {
			d = &volumeDir{name: dirName, files: make(map[string]*Entry)}
			l.volumes[dirName] = d
			l.volNames = append(l.volNames, dirName)
		}
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
