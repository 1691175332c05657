// Package repotest is the conformance suite every repository driver runs:
// the behaviour chunkstore relies on, checked against real storage.
package repotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"

	"github.com/volback/volback/drivers/repo"
)

// Run runs the suite. open must return a fresh, empty backend for each call;
// Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) repo.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b repo.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"Overwrite", testOverwrite},
		{"ReadAt", testReadAt},
		{"Stat", testStat},
		{"List", testList},
		{"ListStopsOnError", testListStops},
		{"Delete", testDelete},
		{"Missing", testMissing},
		{"Empty", testEmpty},
		{"Large", testLarge},
		{"Subdirectories", testSubdirs},
		{"InvalidNames", testInvalidNames},
		{"CanceledContext", testCanceled},
		{"ConcurrentPutGet", testConcurrentPutGet},
		{"ConcurrentReadAt", testConcurrentReadAt},
		{"MaxObjectSize", testMaxObjectSize},
		{"ModTime", testModTime},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t)
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

var ctx = context.Background()

// Random returns n random bytes.
func Random(t testing.TB, n int) []byte {
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// PackName returns a pack name whose ID starts with the hex digits lead.
func PackName(t testing.TB, lead string) string {
	id := hex.EncodeToString(Random(t, 32))
	return "packs/" + lead + id[len(lead):]
}

func put(t *testing.T, b repo.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(ctx, name, data); err != nil {
		t.Fatalf("Put %s: %v", name, err)
	}
}

func mustGet(t *testing.T, b repo.Backend, name string, want []byte) {
	t.Helper()
	got, err := b.Get(ctx, name)
	if err != nil {
		t.Fatalf("Get %s: %v", name, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get %s: got %d bytes, want %d bytes (contents differ)", name, len(got), len(want))
	}
}

func notFound(t *testing.T, op string, err error) {
	t.Helper()
	if !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("%s: got error %v, want one wrapping repo.ErrNotFound", op, err)
	}
}

// ListAll returns the sorted names under prefix.
func ListAll(t testing.TB, b repo.Backend, prefix string) []string {
	t.Helper()
	var names []string
	err := b.List(ctx, prefix, func(i repo.Info) error {
		names = append(names, i.Name)
		return nil
	})
	if err != nil {
		t.Fatalf("List %q: %v", prefix, err)
	}
	sort.Strings(names)
	return names
}

func testRoundTrip(t *testing.T, b repo.Backend) {
	if b.Name() == "" || b.Location() == "" {
		t.Fatalf("Name %q, Location %q: both must be set", b.Name(), b.Location())
	}
	data := Random(t, 12345)
	put(t, b, "config", data)
	mustGet(t, b, "config", data)
	pack := PackName(t, "")
	put(t, b, pack, data[:100])
	mustGet(t, b, pack, data[:100])
}

func testOverwrite(t *testing.T, b repo.Backend) {
	name := PackName(t, "")
	put(t, b, name, []byte("first version"))
	p := make([]byte, 5)
	if err := b.ReadAt(ctx, name, p, 0); err != nil || string(p) != "first" {
		t.Fatalf("ReadAt before overwrite: %q, %v", p, err)
	}
	second := []byte("second, longer version")
	put(t, b, name, second)
	mustGet(t, b, name, second)
	// A reader must see the new object, not a handle kept on the old one.
	if err := b.ReadAt(ctx, name, p, 0); err != nil || string(p) != "secon" {
		t.Fatalf("ReadAt after overwrite: %q, %v", p, err)
	}
	if info, err := b.Stat(ctx, name); err != nil || info.Size != int64(len(second)) {
		t.Fatalf("Stat after overwrite: %+v, %v; want size %d", info, err, len(second))
	}
}

func testReadAt(t *testing.T, b repo.Backend) {
	data := Random(t, 1000)
	name := PackName(t, "")
	put(t, b, name, data)
	for _, r := range []struct{ off, n int }{{0, 10}, {0, 1000}, {123, 456}, {990, 10}, {999, 1}, {1000, 0}, {500, 0}} {
		p := make([]byte, r.n)
		if err := b.ReadAt(ctx, name, p, int64(r.off)); err != nil {
			t.Fatalf("ReadAt off %d len %d: %v", r.off, r.n, err)
		}
		if !bytes.Equal(p, data[r.off:r.off+r.n]) {
			t.Fatalf("ReadAt off %d len %d: wrong bytes", r.off, r.n)
		}
	}
	for _, r := range []struct{ off, n int }{{995, 10}, {1000, 1}, {5000, 10}, {0, 1001}} {
		err := b.ReadAt(ctx, name, make([]byte, r.n), int64(r.off))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ReadAt past end (off %d len %d): got %v, want io.ErrUnexpectedEOF", r.off, r.n, err)
		}
	}
	if err := b.ReadAt(ctx, name, make([]byte, 1), -1); err == nil {
		t.Fatal("ReadAt at offset -1 succeeded")
	}
}

func testStat(t *testing.T, b repo.Backend) {
	sizes := map[string]int{"config": 17, "keys/k1": 0, PackName(t, "00"): 4096, PackName(t, "ff"): 65537}
	for name, n := range sizes {
		put(t, b, name, Random(t, n))
	}
	for name, n := range sizes {
		info, err := b.Stat(ctx, name)
		if err != nil {
			t.Fatalf("Stat %s: %v", name, err)
		}
		if info.Name != name || info.Size != int64(n) {
			t.Fatalf("Stat %s: got %+v, want size %d", name, info, n)
		}
	}
}

func testList(t *testing.T, b repo.Backend) {
	packs := []string{PackName(t, "ab"), PackName(t, "ab"), PackName(t, "ac"), PackName(t, "00"), PackName(t, "ff")}
	others := []string{"config", "backups/b1", "backups/b2", "manifests/b1", "keys/default"}
	sizes := map[string]int64{}
	for i, name := range append(append([]string{}, packs...), others...) {
		put(t, b, name, Random(t, i*10))
		sizes[name] = int64(i * 10)
	}
	expect := func(prefix string, want ...string) {
		t.Helper()
		want = append([]string(nil), want...)
		sort.Strings(want)
		got := ListAll(t, b, prefix)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("List %q:\n got %v\nwant %v", prefix, got, want)
		}
	}
	expect("", append(append([]string{}, packs...), others...)...)
	expect("packs/", packs...)
	expect("packs/a", packs[:3]...)
	expect("packs/ab", packs[:2]...)
	expect(packs[2], packs[2])
	expect("packs/ab" + packs[0][8:9] + "nope")
	expect("backups/", "backups/b1", "backups/b2")
	expect("backups/b1", "backups/b1")
	expect("back", "backups/b1", "backups/b2")
	expect("c", "config")
	expect("nothing/")
	err := b.List(ctx, "", func(i repo.Info) error {
		if i.Size != sizes[i.Name] {
			return fmt.Errorf("listing reports %s with size %d, want %d", i.Name, i.Size, sizes[i.Name])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testListStops(t *testing.T, b repo.Backend) {
	for i := range 5 {
		put(t, b, fmt.Sprintf("backups/b%d", i), []byte("x"))
	}
	stop := errors.New("stop here")
	calls := 0
	err := b.List(ctx, "", func(repo.Info) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("List with failing callback: err %v after %d calls, want the callback's error after 1", err, calls)
	}
}

func testDelete(t *testing.T, b repo.Backend) {
	name := PackName(t, "")
	keep := PackName(t, name[6:8]) // same shard
	put(t, b, name, []byte("doomed"))
	put(t, b, keep, []byte("kept"))
	p := make([]byte, 3)
	if err := b.ReadAt(ctx, name, p, 0); err != nil { // warm any handle cache
		t.Fatal(err)
	}
	if err := b.Delete(ctx, name); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := b.Get(ctx, name)
	notFound(t, "Get after Delete", err)
	_, err = b.Stat(ctx, name)
	notFound(t, "Stat after Delete", err)
	notFound(t, "ReadAt after Delete", b.ReadAt(ctx, name, p, 0))
	notFound(t, "second Delete", b.Delete(ctx, name))
	mustGet(t, b, keep, []byte("kept"))
	if got := ListAll(t, b, ""); len(got) != 1 || got[0] != keep {
		t.Fatalf("List after Delete: %v, want [%s]", got, keep)
	}
}

func testMissing(t *testing.T, b repo.Backend) {
	put(t, b, "backups/present", []byte("x"))
	for _, name := range []string{"config", PackName(t, ""), "backups/absent", "nodir/x", "backups/present/below"} {
		_, err := b.Get(ctx, name)
		notFound(t, "Get "+name, err)
		_, err = b.Stat(ctx, name)
		notFound(t, "Stat "+name, err)
		notFound(t, "ReadAt "+name, b.ReadAt(ctx, name, make([]byte, 1), 0))
		notFound(t, "Delete "+name, b.Delete(ctx, name))
	}
	// A prefix that only exists as a "directory" is not an object.
	_, err := b.Stat(ctx, "backups")
	notFound(t, "Stat of a name prefix", err)
	notFound(t, "Delete of a name prefix", b.Delete(ctx, "backups"))
	mustGet(t, b, "backups/present", []byte("x"))
}

func testEmpty(t *testing.T, b repo.Backend) {
	name := PackName(t, "")
	put(t, b, name, nil)
	mustGet(t, b, name, []byte{})
	if info, err := b.Stat(ctx, name); err != nil || info.Size != 0 {
		t.Fatalf("Stat empty: %+v, %v", info, err)
	}
	if err := b.ReadAt(ctx, name, nil, 0); err != nil {
		t.Fatalf("ReadAt 0 bytes of empty object: %v", err)
	}
	if err := b.ReadAt(ctx, name, make([]byte, 1), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt 1 byte of empty object: %v, want io.ErrUnexpectedEOF", err)
	}
	if got := ListAll(t, b, "packs/"); len(got) != 1 || got[0] != name {
		t.Fatalf("List: %v", got)
	}
}

func testLarge(t *testing.T, b repo.Backend) {
	data := Random(t, 9<<20+7)
	name := PackName(t, "")
	put(t, b, name, data)
	mustGet(t, b, name, data)
	p := make([]byte, 1<<20)
	off := int64(len(data) - len(p))
	if err := b.ReadAt(ctx, name, p, off); err != nil || !bytes.Equal(p, data[off:]) {
		t.Fatalf("ReadAt tail of large object: %v (or wrong bytes)", err)
	}
}

func testSubdirs(t *testing.T, b repo.Backend) {
	names := []string{"a/b/c/d", "a/b/e", "a/f", "g"}
	for _, n := range names {
		put(t, b, n, []byte(n))
	}
	for _, n := range names {
		mustGet(t, b, n, []byte(n))
	}
	if got := ListAll(t, b, "a/b/"); fmt.Sprint(got) != "[a/b/c/d a/b/e]" {
		t.Fatalf("List a/b/: %v", got)
	}
	if got := ListAll(t, b, "a/"); len(got) != 3 {
		t.Fatalf("List a/: %v", got)
	}
}

func testInvalidNames(t *testing.T, b repo.Backend) {
	for _, name := range []string{"", "/etc/passwd", "../escape", "a/../../escape", "..", "a\\b", "a//b", "trailing/"} {
		if err := b.Put(ctx, name, []byte("x")); err == nil {
			t.Errorf("Put %q succeeded, want refusal", name)
		}
		if _, err := b.Get(ctx, name); err == nil || errors.Is(err, repo.ErrNotFound) {
			t.Errorf("Get %q: %v, want an invalid-name error", name, err)
		}
		if _, err := b.Stat(ctx, name); err == nil || errors.Is(err, repo.ErrNotFound) {
			t.Errorf("Stat %q: %v, want an invalid-name error", name, err)
		}
		if err := b.ReadAt(ctx, name, make([]byte, 1), 0); err == nil || errors.Is(err, repo.ErrNotFound) {
			t.Errorf("ReadAt %q: %v, want an invalid-name error", name, err)
		}
		if err := b.Delete(ctx, name); err == nil || errors.Is(err, repo.ErrNotFound) {
			t.Errorf("Delete %q: %v, want an invalid-name error", name, err)
		}
	}
	if got := ListAll(t, b, ""); len(got) != 0 {
		t.Fatalf("refused names left objects behind: %v", got)
	}
}

func testCanceled(t *testing.T, b repo.Backend) {
	c, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Put(c, "config", []byte("x")); err == nil {
		t.Fatal("Put with a canceled context succeeded")
	}
	if got := ListAll(t, b, ""); len(got) != 0 {
		t.Fatalf("canceled Put stored %v", got)
	}
}

func testConcurrentPutGet(t *testing.T, b repo.Backend) {
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("backups/w%d-%d", w, i)
				data := bytes.Repeat([]byte{byte(w), byte(i)}, 1000+i)
				if err := b.Put(ctx, name, data); err != nil {
					errs <- err
					return
				}
				got, err := b.Get(ctx, name)
				if err == nil && !bytes.Equal(got, data) {
					err = fmt.Errorf("get %s: wrong bytes", name)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := ListAll(t, b, "backups/"); len(got) != workers*each {
		t.Fatalf("List after concurrent puts: %d names, want %d", len(got), workers*each)
	}
}

// testConcurrentReadAt reads small ranges of more packs than a handle cache
// would hold, from many goroutines, while other packs are deleted.
func testConcurrentReadAt(t *testing.T, b repo.Backend) {
	const packs, size = 100, 64 << 10
	names := make([]string, packs)
	datas := make([][]byte, packs)
	for i := range names {
		names[i] = PackName(t, "")
		datas[i] = Random(t, size)
		put(t, b, names[i], datas[i])
	}
	doomed := PackName(t, "")
	put(t, b, doomed, Random(t, size))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			p := make([]byte, 4096)
			for i := range 300 {
				k := (w*7 + i*13) % packs
				off := int64((i * 4096) % (size - len(p) + 1))
				if err := b.ReadAt(ctx, names[k], p, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, datas[k][off:off+int64(len(p))]) {
					errs <- fmt.Errorf("ReadAt %s at %d: wrong bytes", names[k], off)
					return
				}
				err := b.ReadAt(ctx, doomed, p[:1], 0)
				if err != nil && !errors.Is(err, repo.ErrNotFound) {
					errs <- err
					return
				}
			}
		})
	}
	if err := b.Delete(ctx, doomed); err != nil {
		t.Error(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	notFound(t, "ReadAt of pack deleted during reads", b.ReadAt(ctx, doomed, make([]byte, 1), 0))
}
