package chunkstore

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/volback/volback/drivers/repo"
)

// memRepo is an in-memory repo.Backend for unit tests only.
type memRepo struct {
	mu      sync.Mutex
	objs    map[string][]byte
	putErr  error // returned by every Put when set
	reads   atomic.Int64
	readsAt map[string]int    // "name@offset" -> ReadAt calls
	putHook func(name string) // called before a put, outside the lock
}

func newMemRepo() *memRepo { return &memRepo{objs: map[string][]byte{}} }

func (m *memRepo) Name() string     { return "memrepo" }
func (m *memRepo) Location() string { return "mem://test" }
func (m *memRepo) Close() error     { return nil }

func (m *memRepo) Properties() repo.Properties { return repo.Properties{} }

func (m *memRepo) Put(ctx context.Context, name string, data []byte) error {
	if m.putHook != nil {
		m.putHook(name)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.putErr != nil {
		return m.putErr
	}
	m.objs[name] = append([]byte(nil), data...)
	return nil
}

func (m *memRepo) get(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, repo.ErrNotFound)
	}
	return b, nil
}

func (m *memRepo) Get(ctx context.Context, name string) ([]byte, error) {
	b, err := m.get(name)
	return append([]byte(nil), b...), err
}

func (m *memRepo) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	m.reads.Add(1)
	m.mu.Lock()
	if m.readsAt == nil {
		m.readsAt = map[string]int{}
	}
	m.readsAt[fmt.Sprintf("%s@%d", name, off)]++
	m.mu.Unlock()
	b, err := m.get(name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(p)) > int64(len(b)) {
		return fmt.Errorf("%s: read %d at %d of %d: %w", name, len(p), off, len(b), io.ErrUnexpectedEOF)
	}
	copy(p, b[off:])
	return nil
}

func (m *memRepo) Stat(ctx context.Context, name string) (repo.Info, error) {
	b, err := m.get(name)
	return repo.Info{Name: name, Size: int64(len(b))}, err
}

func (m *memRepo) List(ctx context.Context, prefix string, fn func(repo.Info) error) error {
	m.mu.Lock()
	var infos []repo.Info
	for k, v := range m.objs {
		if strings.HasPrefix(k, prefix) {
			infos = append(infos, repo.Info{Name: k, Size: int64(len(v))})
		}
	}
	m.mu.Unlock()
	for _, i := range infos {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

func (m *memRepo) Delete(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objs[name]; !ok {
		return fmt.Errorf("%s: %w", name, repo.ErrNotFound)
	}
	delete(m.objs, name)
	return nil
}

// corrupt flips one byte of an object in place.
func (m *memRepo) corrupt(name string, off int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := append([]byte(nil), m.objs[name]...)
	b[off] ^= 0x40
	m.objs[name] = b
}

var _ repo.Backend = (*memRepo)(nil)
