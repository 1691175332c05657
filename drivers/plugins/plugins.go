// Package plugins loads the drivers that are built as Go plugins beside the
// volback binary. The Ceph drivers (rados://, rbd://) are one: linking
// librados and librbd into volback would map them into every run, ~10 MiB
// of RSS and 40 ms of start-up, and would keep volback from starting on a
// host without them. The driver registries call Load the first time a
// locator's scheme has no driver; the plugin's init registers its drivers.
//
// Only the volback binary imports package plugin (it sets Open): that
// import keeps every exported method of a program linked, which made each
// test binary ~60% larger. Tests link the drivers they use instead.
package plugins

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// byScheme names the plugin serving each scheme.
var byScheme = map[string]string{"rados": "ceph", "rbd": "ceph"}

// DirEnv names a directory searched first for plugins.
const DirEnv = "VOLBACK_PLUGINS"

var (
	mu     sync.Mutex
	loaded = map[string]bool{} // by plugin name
)

// Open opens the Go plugin at path, running its init functions. The
// volback binary sets it to plugin.Open; while it is nil, no scheme is
// served by a plugin.
var Open func(path string) error

// Serves reports whether a plugin serves scheme.
func Serves(scheme string) bool { return Open != nil && byScheme[scheme] != "" }

// Load loads the plugin serving scheme, once per process: its init
// registers its drivers. It returns why it cannot, naming the fix, and
// tries again at the next call: an owner that runs for weeks picks up a
// plugin installed after it started.
func Load(scheme string) error {
	name := byScheme[scheme]
	if !Serves(scheme) {
		return fmt.Errorf("no plugin serves the scheme %q", scheme)
	}
	mu.Lock()
	defer mu.Unlock()
	if loaded[name] {
		return nil
	}
	if err := open(name); err != nil {
		return err
	}
	loaded[name] = true
	return nil
}

// open finds and opens volback-<name>.so.
func open(name string) error {
	file := "volback-" + name + ".so"
	dirs := Dirs()
	for _, dir := range dirs {
		path := filepath.Join(dir, file)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := Open(path); err != nil {
			return fmt.Errorf("loading the %s plugin %s: %v; install Ceph's client libraries (apt install librados2 librbd1), and rebuild the plugin with the binary (`make build`) if volback was rebuilt since", name, path, err)
		}
		return nil
	}
	return fmt.Errorf("%s:// support is the %s plugin, %s, found in none of %s: build it with `make build` (after scripts/deps.sh installs librados-dev and librbd-dev) and keep it beside the volback binary, or install both with `make install`",
		schemesOf(name), name, file, strings.Join(dirs, ", "))
}

// Dirs are the directories searched for plugins, in order: $VOLBACK_PLUGINS,
// the binary's own directory, and ../lib/volback beside it (`make install`).
func Dirs() []string {
	var dirs []string
	if d := os.Getenv(DirEnv); d != "" {
		dirs = append(dirs, d)
	}
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			dir := filepath.Dir(exe)
			dirs = append(dirs, dir, filepath.Join(filepath.Dir(dir), "lib", "volback"))
		}
	}
	return dirs
}

// schemesOf lists the schemes plugin name serves ("rados:// and rbd").
func schemesOf(name string) string {
	var s []string
	for scheme, n := range byScheme {
		if n == name {
			s = append(s, scheme)
		}
	}
	sort.Strings(s)
	return strings.Join(s, ":// and ")
}

// Schemes lists the schemes served by plugins, loaded or not.
func Schemes() []string {
	if Open == nil {
		return nil
	}
	var s []string
	for scheme := range byScheme {
		s = append(s, scheme)
	}
	sort.Strings(s)
	return s
}
