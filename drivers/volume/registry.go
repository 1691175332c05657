package volume

import (
	"context"
	"fmt"
	"sort"

	"github.com/volback/volback/drivers/plugins"
	"strings"
	"sync"
)

// PathScheme is the scheme the driver of absolute paths registers under:
// a locator starting with "/" has no URL scheme.
const PathScheme = ""

var (
	mu      sync.Mutex
	drivers = map[string]Driver{}
)

// Register makes a driver serve the locators of a scheme ("rbd" for
// rbd://pool/image, PathScheme for absolute paths). Drivers call it from
// init; the rbd driver registers when the Ceph plugin loads.
func Register(scheme string, d Driver) {
	mu.Lock()
	defer mu.Unlock()
	drivers[scheme] = d
}

// Lookup returns the driver serving locator: an absolute path, or a URL
// such as rbd://pool/image. Relative paths are refused: the client sends
// absolute paths, and the service's working directory means nothing.
func Lookup(locator string) (Driver, error) {
	scheme, ok := PathScheme, strings.HasPrefix(locator, "/")
	if !ok {
		if i := strings.Index(locator, "://"); i > 0 {
			scheme, ok = locator[:i], true
		}
	}
	if !ok {
		return nil, fmt.Errorf("volume %q is neither an absolute path nor a URL such as rbd://pool/image: give the absolute path of the image file or block device", locator)
	}
	d, err := driverOf(scheme)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", locator, err)
	}
	if d == nil {
		return nil, fmt.Errorf("volume %q: no volume driver for scheme %q in this build (it knows: %s)", locator, scheme, strings.Join(Schemes(), ", "))
	}
	return d, nil
}

// driverOf is the driver of scheme, loading the plugin that serves it the
// first time; nil if there is none.
func driverOf(scheme string) (Driver, error) {
	mu.Lock()
	d := drivers[scheme]
	mu.Unlock()
	if d != nil || !plugins.Serves(scheme) {
		return d, nil
	}
	if err := plugins.Load(scheme); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	return drivers[scheme], nil
}

// Schemes describes the registered locator forms, for error messages.
func Schemes() []string {
	mu.Lock()
	defer mu.Unlock()
	var s []string
	for k := range drivers {
		if k == PathScheme {
			s = append(s, "/absolute/path")
		} else {
			s = append(s, k+"://")
		}
	}
	for _, k := range plugins.Schemes() {
		if _, ok := drivers[k]; !ok {
			s = append(s, k+"://")
		}
	}
	sort.Strings(s)
	return s
}

// Checker is implemented by a driver that can be registered yet unable to
// serve (the rbd driver of a build without Ceph support).
type Checker interface {
	// Available returns nil when the driver can serve, else why not and
	// how to fix it.
	Available() error
}

// Available reports whether the driver of scheme (as Register got it:
// "rbd", PathScheme) can serve: nil, or why not. A driver that does not
// implement Checker is available.
func Available(scheme string) error {
	d, err := driverOf(scheme)
	if err != nil {
		return err
	}
	if d == nil {
		return fmt.Errorf("no volume driver for scheme %q in this build", scheme)
	}
	if c, ok := d.(Checker); ok {
		return c.Available()
	}
	return nil
}

// The functions below dispatch to the driver of the locator's scheme.

// Stat describes the volume at locator.
func Stat(locator string) (Info, error) {
	d, err := Lookup(locator)
	if err != nil {
		return Info{}, err
	}
	return d.Stat(locator)
}

// OpenSource opens a volume or snapshot for reading.
func OpenSource(locator string) (Source, error) {
	d, err := Lookup(locator)
	if err != nil {
		return nil, err
	}
	return d.OpenSource(locator)
}

// OpenTarget opens an existing volume for writing; it refuses one in use.
func OpenTarget(locator string) (Target, error) {
	d, err := Lookup(locator)
	if err != nil {
		return nil, err
	}
	return d.OpenTarget(locator)
}

// CreateTarget creates a new volume of size bytes and opens it for writing.
func CreateTarget(locator string, size int64) (Target, error) {
	d, err := Lookup(locator)
	if err != nil {
		return nil, err
	}
	return d.CreateTarget(locator, size)
}

// Delete removes a volume volback created.
func Delete(locator string) error {
	d, err := Lookup(locator)
	if err != nil {
		return err
	}
	return d.Delete(locator)
}

// InUse reports whether something else holds the volume.
func InUse(locator string) (Usage, error) {
	d, err := Lookup(locator)
	if err != nil {
		return Usage{}, err
	}
	return d.InUse(locator)
}

// TakeSnapshot takes a snapshot named name of the volume at locator.
func TakeSnapshot(ctx context.Context, locator, name string) (Snapshot, error) {
	d, err := Lookup(locator)
	if err != nil {
		return Snapshot{}, err
	}
	return d.Snapshot(ctx, locator, name)
}

// DeleteSnapshot removes the snapshot name of the volume at locator.
func DeleteSnapshot(locator, name string) error {
	d, err := Lookup(locator)
	if err != nil {
		return err
	}
	return d.DeleteSnapshot(locator, name)
}

// Placer is implemented by drivers that make new volumes inside a location
// (a directory, a pool), so a zone's new volumes can be created there.
type Placer interface {
	// Place returns the locator of the new volume id inside location, or
	// an error saying what a location of this driver looks like.
	Place(location, id string) (string, error)
}

// Place is the locator of the new volume id inside location (a directory
// for image files, rbd://POOL for RBD images), by location's driver.
func Place(location, id string) (string, error) {
	d, err := Lookup(location)
	if err != nil {
		return "", err
	}
	p, ok := d.(Placer)
	if !ok {
		return "", fmt.Errorf("volume location %q: its driver cannot place new volumes; give a directory or rbd://POOL", location)
	}
	return p.Place(location, id)
}

// CheckSize refuses a size that is negative or not whole sectors, adding
// fix to the refusal; drivers call it so every one words it the same way.
func CheckSize(locator string, size int64, fix string) error {
	if size < 0 {
		return fmt.Errorf("volume %q: negative size %d", locator, size)
	}
	if size%SectorSize != 0 {
		return fmt.Errorf("volume %q is %d bytes, not a whole number of %d-byte sectors: a block volume's size is a multiple of %d; %s",
			locator, size, SectorSize, SectorSize, fix)
	}
	return nil
}

// RoundUp is size rounded up to whole sectors.
func RoundUp(size int64) int64 { return (size + SectorSize - 1) / SectorSize * SectorSize }
