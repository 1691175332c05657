// Package mem is the mem:// repository driver: objects in this process's
// memory, for tests that need a real backend without a disk or a cluster.
//
// mem://NAME names one in-memory repository for the life of the process:
// every Open of the same NAME sees the same objects (as two hosts see one
// Ceph pool), and each Open is a separate client for the native lock.
// ?max_object_size=N makes Put refuse objects larger than N bytes, so
// callers can test how they split large objects.
package mem

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/volback/volback/drivers/repo"
)

// DriverName is the backup_service name reported by Name.
const DriverName = "volback.drivers.mem"

func init() {
	repo.Register("mem", func(ctx context.Context, u *url.URL, create bool) (repo.Backend, error) {
		return OpenURL(u, create)
	})
}

// store is one named repository, shared by every Backend opened on it.
type store struct {
	mu    sync.Mutex
	objs  map[string]object
	locks map[string]*lockState
}

type object struct {
	data    []byte // never modified after Put: readers may keep it
	modTime time.Time
}

var (
	storesMu sync.Mutex
	stores   = map[string]*store{}
	clients  atomic.Int64
)

// Backend is one client of a named in-memory repository.
type Backend struct {
	s        *store
	location string
	client   string // this client's id for the native lock
	maxSize  int64
}

// OpenURL opens mem://NAME[?max_object_size=N]. Without create, NAME must
// have been created by an earlier Open in this process.
func OpenURL(u *url.URL, create bool) (*Backend, error) {
	name := u.Host + u.Path
	if name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("repository URL %q: use mem://NAME (one name, no slashes)", u.String())
	}
	var maxSize int64
	for k, v := range u.Query() {
		switch k {
		case "max_object_size":
			n, err := strconv.ParseInt(v[0], 10, 64)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("repository URL %q: max_object_size=%q is not a positive number of bytes", u.String(), v[0])
			}
			maxSize = n
		default:
			return nil, fmt.Errorf("repository URL %q: unknown parameter %q (mem:// knows max_object_size)", u.String(), k)
		}
	}
	storesMu.Lock()
	s, ok := stores[name]
	if !ok && create {
		s = &store{objs: map[string]object{}, locks: map[string]*lockState{}}
		stores[name] = s
	}
	storesMu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("in-memory repository %q does not exist in this process: open it with create first", name)
	}
	return &Backend{s: s, location: u.String(), client: fmt.Sprintf("mem.%d", clients.Add(1)), maxSize: maxSize}, nil
}

// Remove forgets the in-memory repository NAME (tests free memory with it).
func Remove(name string) {
	storesMu.Lock()
	defer storesMu.Unlock()
	delete(stores, name)
}

// Name implements repo.Backend.
func (b *Backend) Name() string { return DriverName }

// Location implements repo.Backend.
func (b *Backend) Location() string { return b.location }

// Properties states the max_object_size the URL asked for; listing is a
// plain scan of the map.
func (b *Backend) Properties() repo.Properties { return repo.Properties{MaxObjectSize: b.maxSize} }

// Close implements repo.Backend; the objects stay for other clients.
func (b *Backend) Close() error { return nil }

func check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return repo.CheckName(name)
}

// Put stores a private copy, so the caller may reuse data.
func (b *Backend) Put(ctx context.Context, name string, data []byte) error {
	if err := check(ctx, name); err != nil {
		return err
	}
	if b.maxSize > 0 && int64(len(data)) > b.maxSize {
		return fmt.Errorf("store object %s in %s: %d bytes is more than this repository's max_object_size of %d; split the object", name, b.location, len(data), b.maxSize)
	}
	o := object{data: append([]byte(nil), data...), modTime: time.Now()}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	b.s.objs[name] = o
	return nil
}

func (b *Backend) get(ctx context.Context, name string) (object, error) {
	if err := check(ctx, name); err != nil {
		return object{}, err
	}
	b.s.mu.Lock()
	o, ok := b.s.objs[name]
	b.s.mu.Unlock()
	if !ok {
		return object{}, fmt.Errorf("object %s in %s: %w", name, b.location, repo.ErrNotFound)
	}
	return o, nil
}

// Get implements repo.Backend.
func (b *Backend) Get(ctx context.Context, name string) ([]byte, error) {
	o, err := b.get(ctx, name)
	if err != nil {
		return nil, err
	}
	return append([]byte{}, o.data...), nil
}

// ReadAt implements repo.Backend.
func (b *Backend) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	o, err := b.get(ctx, name)
	if err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("read object %s: negative offset %d", name, off)
	}
	if off+int64(len(p)) > int64(len(o.data)) {
		return fmt.Errorf("read object %s: %d bytes at offset %d of a %d-byte object: %w", name, len(p), off, len(o.data), io.ErrUnexpectedEOF)
	}
	copy(p, o.data[off:])
	return nil
}

// Stat implements repo.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (repo.Info, error) {
	o, err := b.get(ctx, name)
	if err != nil {
		return repo.Info{}, err
	}
	return repo.Info{Name: name, Size: int64(len(o.data)), ModTime: o.modTime}, nil
}

// List reports a snapshot taken under the lock, so fn may call back into
// the backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(repo.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.s.mu.Lock()
	var infos []repo.Info
	for name, o := range b.s.objs {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, repo.Info{Name: name, Size: int64(len(o.data)), ModTime: o.modTime})
		}
	}
	b.s.mu.Unlock()
	for _, i := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements repo.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := check(ctx, name); err != nil {
		return err
	}
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	if _, ok := b.s.objs[name]; !ok {
		return fmt.Errorf("delete object %s in %s: %w", name, b.location, repo.ErrNotFound)
	}
	delete(b.s.objs, name)
	return nil
}

var _ repo.Backend = (*Backend)(nil)
