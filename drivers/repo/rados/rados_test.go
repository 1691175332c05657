//go:build ceph

package rados

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/repo/repotest"
	"github.com/volback/volback/integration/ceph"
)

var ctx = context.Background()

var seq atomic.Int64

// namespace returns a RADOS namespace no other test (or earlier run) uses:
// each test gets a fresh, empty repository in the shared test pool.
func namespace(t testing.TB) string {
	return fmt.Sprintf("t%d-%d-%d", time.Now().UnixNano(), os.Getpid(), seq.Add(1))
}

func repoURL(e ceph.Env, ns string, extra ...string) string {
	q := url.Values{"conf": {e.Conf}, "user": {e.User}, "namespace": {ns}}
	u := "rados://" + e.Pool + "?" + q.Encode()
	for _, x := range extra {
		u += "&" + x
	}
	return u
}

func open(t testing.TB, rawURL string, create bool) *Backend {
	t.Helper()
	b, err := repo.Open(ctx, rawURL, create)
	if err != nil {
		t.Fatal(err)
	}
	return b.(*Backend)
}

// fresh opens a new empty repository on the test cluster.
func fresh(t *testing.T) repo.Backend {
	e := ceph.Cluster(t)
	return open(t, repoURL(e, namespace(t)), false)
}

// twoClients opens one fresh repository twice: two connections, two
// RADOS client instances, as two hosts would have.
func twoClients(t *testing.T) (repo.Backend, repo.Backend) {
	e := ceph.Cluster(t)
	u := repoURL(e, namespace(t))
	return open(t, u, false), open(t, u, false)
}

func TestConformance(t *testing.T) {
	defer func(n int) { indexPage = n }(indexPage)
	indexPage = 3 // listings cross index pages
	repotest.Run(t, fresh)
}

func TestLocker(t *testing.T) { repotest.RunLocker(t, twoClients) }

func TestShared(t *testing.T) { repotest.RunShared(t, twoClients) }

// TestLargerThanOSDLimit stores an object larger than the cluster's
// osd_max_object_size (split into parts), reads it back whole and across
// part boundaries, and replaces it with a small one, which removes the
// old parts.
func TestLargerThanOSDLimit(t *testing.T) {
	b := fresh(t).(*Backend)
	defer b.Close()
	limit := b.maxObjectSize()
	if limit > 64<<20 {
		t.Fatalf("the test cluster's osd_max_object_size is %d; start.sh sets 32 MiB so this test stays small", limit)
	}
	data := repotest.Random(t, int(limit)+1)
	name := "manifests/big"
	if err := b.Put(ctx, name, data); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(ctx, name)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get of a %d-byte object: %v (or wrong bytes)", len(data), err)
	}
	p := make([]byte, 3*b.partSize)
	off := b.partSize - 100
	if err := b.ReadAt(ctx, name, p, off); err != nil || !bytes.Equal(p, data[off:off+int64(len(p))]) {
		t.Fatalf("ReadAt across parts: %v (or wrong bytes)", err)
	}
	m, _, err := b.readMeta(name)
	if err != nil || m.parts != uint32(partsFor(int64(len(data)), b.partSize)) {
		t.Fatalf("meta %+v, %v", m, err)
	}
	if err := b.Put(ctx, name, []byte("small now")); err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < int64(m.parts); i++ {
		if _, err := b.io.Stat(partOID(m.nonce, i)); !errors.Is(err, rados.ErrNotFound) {
			t.Fatalf("part %d of the replaced object: %v, want it deleted", i, err)
		}
	}
	if got, err := b.Get(ctx, name); err != nil || string(got) != "small now" {
		t.Fatalf("Get after replace: %q, %v", got, err)
	}
}

// TestIndexCrashStates builds the states a crash leaves between the index
// and the objects, and checks List never loses an object that exists and
// never reports one that does not.
func TestIndexCrashStates(t *testing.T) {
	b := fresh(t).(*Backend)
	defer b.Close()
	// Put crashed after its pending entry, before the object.
	if err := b.setEntry("packs/never-written", entry{pending: true, size: 5, nonce: 1, parts: 2}); err != nil {
		t.Fatal(err)
	}
	// Put crashed after the object, before committing the entry.
	if err := b.Put(ctx, "packs/written", []byte("12345")); err != nil {
		t.Fatal(err)
	}
	if err := b.setEntry("packs/written", entry{pending: true, size: 999}); err != nil {
		t.Fatal(err)
	}
	// Delete crashed after marking the entry, before removing the object.
	if err := b.Put(ctx, "packs/delete-crashed", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := b.setEntry("packs/delete-crashed", entry{pending: true, size: 3}); err != nil {
		t.Fatal(err)
	}
	// An unreadable entry is checked against the object too.
	if err := b.Put(ctx, "packs/garbled", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := b.io.SetOmap(dirIndex("packs"), map[string][]byte{"packs/garbled": []byte("junk")}); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := b.List(ctx, "packs/", func(i repo.Info) error {
		got = append(got, fmt.Sprintf("%s:%d", i.Name, i.Size))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "[packs/delete-crashed:3 packs/garbled:1 packs/written:5]"; fmt.Sprint(got) != want {
		t.Fatalf("List: %v, want %s", got, want)
	}
	// Deleting a name whose object never came cleans its entry.
	if err := b.Delete(ctx, "packs/never-written"); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("Delete of a pending-only name: %v, want ErrNotFound", err)
	}
	if kv, _ := b.readIndexPage(dirIndex("packs"), "", "packs/never-written", 10); len(kv) != 0 {
		t.Fatalf("stale entry left in the index: %v", kv)
	}
}

func TestReservedNames(t *testing.T) {
	b := fresh(t)
	defer b.Close()
	for _, name := range []string{"volback.index", "volback.part.1.0", "volback.meta/x"} {
		if err := b.Put(ctx, name, []byte("x")); err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("Put %q: %v, want a refusal naming the reserved prefix", name, err)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	e := ceph.Cluster(t)
	pool := fmt.Sprintf("volback-open-%d", time.Now().UnixNano())
	missing := "rados://" + pool + "?conf=" + url.QueryEscape(e.Conf) + "&user=" + e.User
	_, err := repo.Open(ctx, missing, false)
	if err == nil || !strings.Contains(err.Error(), pool) || !strings.Contains(err.Error(), "ceph osd pool create") {
		t.Fatalf("open of a missing pool: %v, want an error naming %s and how to create it", err, pool)
	}
	t.Log(err)
	b := open(t, missing, true)
	t.Cleanup(func() {
		if err := b.conn.DeletePool(pool); err != nil {
			t.Errorf("delete test pool %s: %v", pool, err)
		}
		b.Close()
	})
	if err := b.Put(ctx, "config", []byte("x")); err != nil {
		t.Fatalf("Put into the pool open created: %v", err)
	}

	noConf := filepath.Join(t.TempDir(), "none.conf")
	unreachable := filepath.Join(t.TempDir(), "unreachable.conf")
	keyring := filepath.Join(e.Dir, "keyring")
	os.WriteFile(unreachable, []byte("[global]\nmon host = 127.0.0.1:9\nkeyring = "+keyring+"\n"), 0o600)
	for _, c := range []struct{ url, want string }{
		{"rados://" + e.Pool + "?conf=" + noConf, "?conf=PATH or CEPH_CONF"},
		{repoURL(e, "x", "user=nobody"), "keyring"},
		{"rados://" + e.Pool + "?conf=" + unreachable + "&timeout=2s", "monitors"},
		{repoURL(e, "x", "colour=blue"), "unknown parameter"},
		{repoURL(e, "x", "timeout=soon"), "timeout"},
		{"rados:///" + e.Pool, "host part"},
	} {
		start := time.Now()
		_, err := repo.Open(ctx, c.url, false)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open %s: %v, want an error saying %q", c.url, err, c.want)
			continue
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("Open %s took %v to fail", c.url, d)
		}
		t.Logf("%v (after %v)", err, time.Since(start).Round(time.Millisecond))
	}
}

// TestOSDStopped pauses the cluster's only OSD (SIGSTOP: it neither
// answers nor closes connections, like a hung or unplugged host) and
// checks that operations fail within the URL's timeout with an error
// saying what to check, and work again once it resumes.
func TestOSDStopped(t *testing.T) {
	e := ceph.Disrupt(t)
	b := open(t, repoURL(e, namespace(t), "timeout=3s"), false)
	defer b.Close()
	if err := b.Put(ctx, "backups/before", []byte("x")); err != nil {
		t.Fatal(err)
	}
	pid := e.OSDPid(t)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("resume the OSD (pid %d): %v", pid, err)
			}
		}
	}
	t.Cleanup(resume)
	start := time.Now()
	err := b.Put(ctx, "backups/during", repotest.Random(t, 3<<20))
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "did not answer within 3s") || !strings.Contains(err.Error(), "backups/during") {
		t.Fatalf("Put with the OSD stopped: %v, want a timeout error naming the object and what to check", err)
	}
	t.Logf("Put failed after %v: %v", took.Round(time.Millisecond), err)
	if took > 20*time.Second {
		t.Fatalf("Put took %v to fail with a 3s timeout", took)
	}
	start = time.Now()
	_, err = b.Get(ctx, "backups/before")
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("Get with the OSD stopped: %v after %v, want a timeout error within a few seconds", err, time.Since(start))
	}
	resume()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := b.Get(ctx, "backups/before")
		if err == nil && string(got) == "x" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the OSD resumed: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := b.Put(ctx, "backups/after", []byte("y")); err != nil {
		t.Fatalf("Put after the OSD resumed: %v", err)
	}
}

// BenchmarkPut compares one synchronous write_full of an 8 MiB pack with
// Put, which writes its 1 MiB parts concurrently.
//
//	go test -tags ceph,pacific -run '^$' -bench Put ./drivers/repo/rados/
func BenchmarkPut(b *testing.B) {
	e := ceph.Cluster(b)
	be := open(b, repoURL(e, namespace(b)), false)
	defer be.Close()
	data := repotest.Random(b, 8<<20)
	b.Run("write_full", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; b.Loop(); i++ {
			if err := be.io.WriteFull(fmt.Sprintf("bench.%d", i%16), data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Put", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; b.Loop(); i++ {
			if err := be.Put(ctx, fmt.Sprintf("packs/bench%02d", i%16), data); err != nil {
				b.Fatal(err)
			}
		}
	})
	for i := range 16 {
		be.io.Delete(fmt.Sprintf("bench.%d", i))
		be.Delete(ctx, fmt.Sprintf("packs/bench%02d", i))
	}
}

// BenchmarkReadAt64K reads 64 KiB blobs from 8 MiB packs in parallel, as
// restores and the mount do: metadata and part are two round trips.
func BenchmarkReadAt64K(b *testing.B) {
	e := ceph.Cluster(b)
	be := open(b, repoURL(e, namespace(b)), false)
	defer be.Close()
	var names []string
	for i := range 8 {
		n := fmt.Sprintf("packs/read%02d", i)
		if err := be.Put(ctx, n, repotest.Random(b, 8<<20)); err != nil {
			b.Fatal(err)
		}
		names = append(names, n)
	}
	defer func() {
		for _, n := range names {
			be.Delete(ctx, n)
		}
	}()
	b.SetBytes(64 << 10)
	b.SetParallelism(4)
	b.ResetTimer()
	var k atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, 64<<10)
		for pb.Next() {
			i := k.Add(1)
			if err := be.ReadAt(ctx, names[i%8], p, (i%127)<<16); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestCleanUp leaves the debris of crashed writes (parts of a Put that
// never wrote its head, parts of a replaced object whose Put died before
// deleting them) and checks CleanUp removes exactly that, keeping what the
// heads use and what is younger than its cutoff.
func TestCleanUp(t *testing.T) {
	b := fresh(t).(*Backend)
	defer b.Close()
	big := repotest.Random(t, int(3*b.partSize))
	// A Put that died after its parts: pending entry, parts, no head.
	lost := meta{size: int64(len(big)), nonce: newNonce(), parts: 3, partSize: uint32(b.partSize)}
	if err := b.writeParts(ctx, lost, big); err != nil {
		t.Fatal(err)
	}
	if err := b.setEntry("packs/lost", entry{pending: true, nonce: lost.nonce, parts: lost.parts}); err != nil {
		t.Fatal(err)
	}
	// A replace that died after its head, before deleting the old parts.
	if err := b.Put(ctx, "packs/replaced", big); err != nil {
		t.Fatal(err)
	}
	old, _, _ := b.readMeta("packs/replaced")
	if err := b.Put(ctx, "packs/replaced", big[:10]); err != nil {
		t.Fatal(err)
	}
	if err := b.writeParts(ctx, old, big); err != nil { // as if never deleted
		t.Fatal(err)
	}
	if err := b.setEntry("packs/replaced", entry{pending: true, oldNonce: old.nonce, oldParts: old.parts}); err != nil {
		t.Fatal(err)
	}
	// A committed split object, and a pending entry too young to touch.
	if err := b.Put(ctx, "manifests/kept", big); err != nil {
		t.Fatal(err)
	}
	kept, _, _ := b.readMeta("manifests/kept")
	if err := b.setEntry("backups/young", entry{pending: true, modTime: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	n, err := b.CleanUp(ctx, 0)
	if err != nil || n != 2 {
		t.Fatalf("CleanUp: settled %d, %v; want 2", n, err)
	}
	for _, m := range []meta{lost, old} {
		for i := range int64(m.parts) {
			if _, err := b.io.Stat(partOID(m.nonce, i)); !errors.Is(err, rados.ErrNotFound) {
				t.Fatalf("part %d of nonce %x: %v, want it deleted", i, m.nonce, err)
			}
		}
	}
	got, err := b.Get(ctx, "manifests/kept")
	if err != nil || !bytes.Equal(got, big) || kept.parts != 3 {
		t.Fatalf("a committed split object after CleanUp: %v", err)
	}
	if got, err := b.Get(ctx, "packs/replaced"); err != nil || !bytes.Equal(got, big[:10]) {
		t.Fatalf("the replacing object after CleanUp: %v", err)
	}
	if kv, _ := b.readIndexPage(dirIndex("packs"), "", "", 10); len(kv) != 1 {
		t.Fatalf("packs index after CleanUp: %d entries, want only packs/replaced", len(kv))
	} else if e, err := decodeEntry(kv["packs/replaced"]); err != nil || e.pending || e.size != 10 {
		t.Fatalf("packs/replaced entry after CleanUp: %+v, %v; want committed with size 10", e, err)
	}
	if kv, _ := b.readIndexPage(dirIndex("backups"), "", "", 10); len(kv) != 1 {
		t.Fatalf("the young pending entry was settled: %v", kv)
	}
}
