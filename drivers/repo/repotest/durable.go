package repotest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/volback/volback/drivers/repo"
)

// Crasher gives RunDurable a backend on storage that can lose power.
type Crasher interface {
	// Open opens a backend on the storage (empty the first time).
	Open(t *testing.T) repo.Backend
	// Crash cuts the power: whatever the storage was not told to make
	// durable may be lost. The storage can then be opened again.
	Crash(t *testing.T)
}

// RunDurable checks that what Put and Delete return from survives a power
// cut at once: an object put is there, an object deleted stays gone (a
// deleted backup record must not come back and block garbage collection),
// and so are objects put into directories that did not exist yet.
func RunDurable(t *testing.T, newCrasher func(t *testing.T) Crasher) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c Crasher)
	}{
		{"PutSurvives", testPutSurvives},
		{"DeleteSurvives", testDeleteSurvives},
		{"NewDirectoriesSurvive", testNewDirsSurvive},
		{"ConcurrentPutsInNewDirectoriesSurvive", testConcurrentNewDirs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newCrasher(t)) })
	}
}

func crashAndReopen(t *testing.T, c Crasher, b repo.Backend) repo.Backend {
	t.Helper()
	b.Close()
	c.Crash(t)
	return c.Open(t)
}

func testPutSurvives(t *testing.T, c Crasher) {
	b := c.Open(t)
	data := Random(t, 100000)
	put(t, b, "config", data)
	b = crashAndReopen(t, c, b)
	defer b.Close()
	mustGet(t, b, "config", data)
}

func testDeleteSurvives(t *testing.T, c Crasher) {
	b := c.Open(t)
	pack := PackName(t, "")
	for _, n := range []string{"backups/b1", "manifests/b1", pack, "keep/k"} {
		put(t, b, n, []byte(n))
	}
	for _, n := range []string{"backups/b1", "manifests/b1", pack} {
		if err := b.Delete(ctx, n); err != nil {
			t.Fatalf("Delete %s: %v", n, err)
		}
	}
	b = crashAndReopen(t, c, b)
	defer b.Close()
	for _, n := range []string{"backups/b1", "manifests/b1", pack} {
		if _, err := b.Stat(ctx, n); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("%s came back after a power cut that followed its Delete (Stat: %v)", n, err)
		}
	}
	mustGet(t, b, "keep/k", []byte("keep/k"))
}

func testNewDirsSurvive(t *testing.T, c Crasher) {
	b := c.Open(t)
	names := []string{"a/b/c/deep", "backups/x", PackName(t, "7e"), PackName(t, "7f")}
	for _, n := range names {
		put(t, b, n, []byte(n))
	}
	b = crashAndReopen(t, c, b)
	defer b.Close()
	for _, n := range names {
		got, err := b.Get(ctx, n)
		if err != nil || !bytes.Equal(got, []byte(n)) {
			t.Errorf("%s after a power cut: %q, %v", n, got, err)
		}
	}
	if got := ListAll(t, b, ""); len(got) != len(names) {
		t.Errorf("listing after a power cut: %v, want %d objects", got, len(names))
	}
}

// testConcurrentNewDirs: Puts racing to create the same new directory
// must each return only once that directory is durable too.
func testConcurrentNewDirs(t *testing.T, c Crasher) {
	b := c.Open(t)
	var names []string
	for i := range 16 {
		names = append(names, fmt.Sprintf("new%d/sub/o%d", i%2, i))
	}
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Put(ctx, n, []byte(n)); err != nil {
				t.Errorf("Put %s: %v", n, err)
			}
		}()
	}
	wg.Wait()
	b = crashAndReopen(t, c, b)
	defer b.Close()
	for _, n := range names {
		if got, err := b.Get(ctx, n); err != nil || string(got) != n {
			t.Errorf("%s after a power cut: %q, %v", n, got, err)
		}
	}
}
