package repotest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/volback/volback/drivers/repo"
)

// maxTestedObject bounds the object the limit test writes: a driver whose
// stated MaxObjectSize is larger is checked only for what it says.
const maxTestedObject = 64 << 20

// testMaxObjectSize checks the stated limit: an object of exactly
// MaxObjectSize is stored, one byte more is refused with an error naming
// the object (not ErrNotFound) and leaves nothing behind.
func testMaxObjectSize(t *testing.T, b repo.Backend) {
	max := b.Properties().MaxObjectSize
	if max < 0 {
		t.Fatalf("Properties().MaxObjectSize = %d, want 0 (no limit) or a positive size", max)
	}
	if max == 0 || max > maxTestedObject {
		// No limit stated (or too large to write here): a 9 MiB object
		// (testLarge) must then work, which the suite checks anyway.
		t.Logf("MaxObjectSize %d: nothing more to check", max)
		return
	}
	data := Random(t, int(max)+1)
	fits, over := PackName(t, ""), PackName(t, "")
	put(t, b, fits, data[:max])
	mustGet(t, b, fits, data[:max])
	err := b.Put(ctx, over, data)
	if err == nil {
		t.Fatalf("Put of %d bytes succeeded, but Properties states MaxObjectSize %d", len(data), max)
	}
	if errors.Is(err, repo.ErrNotFound) || !strings.Contains(err.Error(), over) {
		t.Fatalf("Put over MaxObjectSize: %v, want an error naming %s", err, over)
	}
	_, err = b.Stat(ctx, over)
	notFound(t, "Stat of a refused object", err)
	if got := ListAll(t, b, "packs/"); len(got) != 1 || got[0] != fits {
		t.Fatalf("List after a refused Put: %v, want [%s]", got, fits)
	}
}

// testModTime checks that Stat and List report when an object was written
// (GC's grace period reads it), and that an overwrite moves it forward.
func testModTime(t *testing.T, b repo.Backend) {
	const slack = 2 * time.Second // coarse file system timestamps, clock steps
	plausible := func(op string, got, before, after time.Time) {
		t.Helper()
		if got.Before(before.Add(-slack)) || got.After(after.Add(slack)) {
			t.Fatalf("%s: ModTime %v, want between %v and %v", op, got, before, after)
		}
	}
	name := PackName(t, "")
	before := time.Now()
	put(t, b, name, []byte("first"))
	after := time.Now()
	st, err := b.Stat(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	plausible("Stat", st.ModTime, before, after)
	listed := false
	err = b.List(ctx, "packs/", func(i repo.Info) error {
		if i.Name == name {
			listed = true
			plausible("List", i.ModTime, before, after)
		}
		return nil
	})
	if err != nil || !listed {
		t.Fatalf("List: %v, listed %v", err, listed)
	}
	time.Sleep(1100 * time.Millisecond) // past one-second timestamp granularity
	put(t, b, name, []byte("second"))
	st2, err := b.Stat(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !st2.ModTime.After(st.ModTime) {
		t.Fatalf("overwrite: ModTime %v, not after the first write's %v", st2.ModTime, st.ModTime)
	}
}
