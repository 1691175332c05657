// Package posix is the file:// repository driver: one file per object in a
// local (or mounted) directory, with pack objects sharded by the first two
// hex digits of their ID.
package posix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/volback/volback/drivers/repo"
)

// DriverName is the backup_service name reported by Name.
const DriverName = "volback.drivers.posix"

// maxHandles bounds the open-file cache used by ReadAt.
const maxHandles = 64

func init() {
	repo.Register("file", func(ctx context.Context, u *url.URL, create bool) (repo.Backend, error) {
		return OpenURL(u, create)
	})
}

// Backend stores objects as files under a root directory.
type Backend struct {
	root    string
	handles *handleCache

	// durable holds the directories known to be durably linked into
	// their parents: created and their parent fsynced by this process, or
	// found there at open. mkMu serialises creating the others.
	durable sync.Map
	mkMu    sync.Mutex
}

// OpenURL opens a file:///absolute/path URL.
func OpenURL(u *url.URL, create bool) (*Backend, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("repository URL %q names host %q: file:// repositories are local, use file:///absolute/path", u.String(), u.Host)
	}
	if u.Path == "" || !filepath.IsAbs(u.Path) {
		return nil, fmt.Errorf("repository URL %q has no absolute path: use file:///absolute/path", u.String())
	}
	return Open(u.Path, create)
}

// Open opens the repository directory dir, creating it (0700) when create is
// set. It refuses a missing directory (without create) and a directory it
// cannot write, so problems show up before any backup work starts.
func Open(dir string, create bool) (*Backend, error) {
	root := filepath.Clean(dir)
	b := &Backend{root: root, handles: newHandleCache(maxHandles)}
	if create {
		if err := b.mkdirDurable(root); err != nil {
			return nil, fmt.Errorf("create repository directory %s: %w (check the parent directory's permissions and free space)", root, err)
		}
	}
	st, err := os.Stat(root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("repository directory %s does not exist: check that its filesystem is mounted and the repository URL is right (or create the repository first)", root)
	case err != nil:
		return nil, fmt.Errorf("repository directory %s: %w", root, err)
	case !st.IsDir():
		return nil, fmt.Errorf("repository path %s is not a directory: check the repository URL", root)
	}
	probe, err := os.CreateTemp(root, tmpPrefix+"probe-*")
	if err != nil {
		return nil, fmt.Errorf("repository directory %s is not writable (%v): fix its permissions or mount, or choose another repository", root, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	b.durable.Store(root, true)
	return b, nil
}

// Name implements repo.Backend.
func (b *Backend) Name() string { return DriverName }

// Location implements repo.Backend.
func (b *Backend) Location() string { return "file://" + b.root }

// Root is the repository directory.
func (b *Backend) Root() string { return b.root }

// Put writes a temp file next to the final path, fsyncs it, renames it into
// place and fsyncs the directory: readers see all or nothing and the object
// survives a crash once Put returns. On failure the temp file is removed.
func (b *Backend) Put(ctx context.Context, name string, data []byte) error {
	if err := b.check(ctx, name); err != nil {
		return err
	}
	path := physical(b.root, name)
	dir := filepath.Dir(path)
	if err := b.mkdirDurable(dir); err != nil {
		return b.putErr(name, err)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return b.putErr(name, err)
	}
	tmp := f.Name()
	err = writeObject(f, data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return b.putErr(name, err)
	}
	b.handles.invalidate(path) // an overwrite replaced the inode
	if err := syncDir(dir); err != nil {
		return b.putErr(name, err)
	}
	return nil
}

func (b *Backend) putErr(name string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("store object %s in %s: the disk is full (%w); free space or move the repository to a larger filesystem", name, b.root, err)
	}
	return fmt.Errorf("store object %s in %s: %w", name, b.root, err)
}

// Get implements repo.Backend.
func (b *Backend) Get(ctx context.Context, name string) ([]byte, error) {
	if err := b.check(ctx, name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(physical(b.root, name))
	if err != nil {
		return nil, b.readErr(name, err)
	}
	return data, nil
}

// ReadAt reads through a cached open handle with pread, so concurrent small
// reads of the same pack share one file descriptor.
func (b *Backend) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if err := b.check(ctx, name); err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("read object %s: negative offset %d", name, off)
	}
	h, err := b.handles.get(physical(b.root, name))
	if err != nil {
		return b.readErr(name, err)
	}
	defer b.handles.release(h)
	n, err := h.f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return fmt.Errorf("read object %s: %d bytes at offset %d, only %d available: %w", name, len(p), off, n, io.ErrUnexpectedEOF)
	}
	return b.readErr(name, err)
}

// Stat implements repo.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (repo.Info, error) {
	if err := b.check(ctx, name); err != nil {
		return repo.Info{}, err
	}
	st, err := os.Stat(physical(b.root, name))
	if err == nil && !st.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return repo.Info{}, b.readErr(name, err)
	}
	return repo.Info{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// Delete removes the object and fsyncs its directory before returning: a
// deleted backup record that came back after a power cut would resurrect
// a backup whose references are gone.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := b.check(ctx, name); err != nil {
		return err
	}
	path := physical(b.root, name)
	st, err := os.Lstat(path)
	if err == nil && !st.Mode().IsRegular() {
		err = fs.ErrNotExist // never remove a directory by its name
	}
	if err == nil {
		err = os.Remove(path)
	}
	b.handles.invalidate(path)
	if err != nil {
		return fmt.Errorf("delete object: %w", b.readErr(name, err))
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("delete object %s in %s: %w", name, b.root, err)
	}
	return nil
}

// Properties implements repo.Backend: files have no size limit and List
// walks the directory.
func (b *Backend) Properties() repo.Properties { return repo.Properties{} }

// Close releases cached file handles.
func (b *Backend) Close() error {
	b.handles.close()
	return nil
}

func (b *Backend) check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return checkName(name)
}

// readErr maps "no such file" (and a path element being a file or missing
// directory) to repo.ErrNotFound.
func (b *Backend) readErr(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) {
		return fmt.Errorf("object %s in %s: %w", name, b.root, repo.ErrNotFound)
	}
	return fmt.Errorf("object %s in %s: %w", name, b.root, err)
}

// mkdirDurable creates dir and missing parents, fsyncing each parent, and
// returns only once dir is durably linked: also when another goroutine is
// creating it at the same moment (it waits for that), and when it existed
// already (its parent is fsynced once, as nobody here knows whether that
// happened).
func (b *Backend) mkdirDurable(dir string) error {
	if _, ok := b.durable.Load(dir); ok {
		return nil
	}
	b.mkMu.Lock()
	defer b.mkMu.Unlock()
	return b.mkdirDurableLocked(dir)
}

func (b *Backend) mkdirDurableLocked(dir string) error {
	if _, ok := b.durable.Load(dir); ok {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := b.mkdirDurableLocked(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if parent != dir {
		if err := syncDir(parent); err != nil {
			return err
		}
	}
	b.durable.Store(dir, true)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
