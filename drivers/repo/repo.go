// Package repo defines the repository driver interface: a flat namespace of
// immutable named objects. Drivers (posix for file://, rados for Ceph) know
// nothing about chunks or backups; chunkstore builds the format on top.
package repo

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"

	"github.com/volback/volback/drivers/plugins"
	"sync"
	"time"
)

// ErrNotFound is returned (wrapped) by Get, ReadAt, Stat and Delete when the
// named object does not exist. Test with errors.Is.
var ErrNotFound = errors.New("object not found")

// Info describes one stored object.
type Info struct {
	Name string
	Size int64
	// ModTime is when the object was last written. GC's grace period
	// reads it: an unreferenced object younger than the grace is left
	// alone, since a backup may not have committed its references yet.
	ModTime time.Time
}

// Properties states a driver's limits, as restic's backend Properties do.
// chunkstore honours them and repotest checks them.
type Properties struct {
	// MaxObjectSize is the largest object Put accepts; 0 means no limit.
	// chunkstore splits anything that can grow past it (manifests). The
	// rados driver states none: it splits objects into parts below the
	// cluster's osd_max_object_size itself.
	MaxObjectSize int64
	// IndexedList is set when List reads an index the driver keeps
	// per top-level directory instead of walking storage (RADOS has no
	// prefix listing). Names must then have a top-level directory
	// ("packs/…", "backups/…"), except "config".
	IndexedList bool
}

// Backend is a repository driver. Names are slash-separated relative paths
// such as "config", "packs/<hex>", "backups/<uuid>"; drivers may store them
// differently (sharded) but always list and address them by these names.
// All methods are safe for concurrent use.
type Backend interface {
	// Name is the driver's backup_service name, e.g. "volback.drivers.posix".
	Name() string
	// Location is the URL the backend was opened with, e.g. "file:///srv/repo".
	Location() string
	// Put stores data under name atomically (readers see all or nothing) and
	// durably (it survives a crash once Put returns). An existing object of
	// the same name is replaced.
	Put(ctx context.Context, name string, data []byte) error
	// Get returns the whole object.
	Get(ctx context.Context, name string) ([]byte, error)
	// ReadAt reads len(p) bytes at off; reading past the end is an error
	// (io.ErrUnexpectedEOF, wrapped).
	ReadAt(ctx context.Context, name string, p []byte, off int64) error
	// Stat returns the object's size.
	Stat(ctx context.Context, name string) (Info, error)
	// List calls fn for every object whose name starts with prefix, in no
	// particular order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// Delete removes the object; deleting a missing object is ErrNotFound.
	Delete(ctx context.Context, name string) error
	// Properties states the driver's limits.
	Properties() Properties
	// Close releases resources (open files, cluster connections).
	Close() error
}

// Opener opens a backend for a parsed URL. create asks the driver to create
// the location (directory, pool) when it does not exist.
type Opener func(ctx context.Context, u *url.URL, create bool) (Backend, error)

var (
	mu      sync.Mutex
	drivers = map[string]Opener{}
)

// Register makes a driver available under a URL scheme. Drivers call it
// from init; the rados driver registers when the Ceph plugin loads.
func Register(scheme string, open Opener) {
	mu.Lock()
	defer mu.Unlock()
	drivers[scheme] = open
}

// Open opens the repository at rawURL with the driver registered for its
// scheme.
func Open(ctx context.Context, rawURL string, create bool) (Backend, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("repository URL %q: %v (expected file:///path or rados://pool)", rawURL, err)
	}
	open, ok := driver(u.Scheme)
	if !ok && plugins.Serves(u.Scheme) {
		if err := plugins.Load(u.Scheme); err != nil {
			return nil, fmt.Errorf("repository URL %q: %w", rawURL, err)
		}
		open, ok = driver(u.Scheme)
	}
	if !ok {
		return nil, fmt.Errorf("repository URL %q: no driver for scheme %q (this build knows: %v)", rawURL, u.Scheme, Schemes())
	}
	return open(ctx, u, create)
}

func driver(scheme string) (Opener, bool) {
	mu.Lock()
	defer mu.Unlock()
	open, ok := drivers[scheme]
	return open, ok
}

// Schemes lists the URL schemes of the registered drivers and the plugins.
func Schemes() []string {
	mu.Lock()
	defer mu.Unlock()
	var s []string
	for k := range drivers {
		s = append(s, k+"://")
	}
	for _, k := range plugins.Schemes() {
		if _, ok := drivers[k]; !ok {
			s = append(s, k+"://")
		}
	}
	sort.Strings(s)
	return s
}
