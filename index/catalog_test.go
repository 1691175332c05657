package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/volback/volback/chunkstore"
)

const testRepo = "5d0c7a52-8f7e-4c1b-9a55-0a4a9b7c2e11" // a repository config id

func openT(t testing.TB, dir string) *Catalog {
	t.Helper()
	c, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// chunkID makes a distinct, deterministic chunk id from n.
func chunkID(n uint64) chunkstore.ID {
	var id chunkstore.ID
	binary.BigEndian.PutUint64(id[:], n*0x9E3779B97F4A7C15)
	binary.BigEndian.PutUint64(id[24:], n)
	return id
}

func testChunk(n uint64) Chunk {
	return Chunk{
		Location: chunkstore.Location{
			Pack:      chunkID(n / 100),
			Offset:    uint32(n * 4096),
			Length:    uint32(1000 + n%3000),
			RawLength: 65536,
			Codec:     chunkstore.CodecZstd,
		},
		Refs: uint32(n%7 + 1),
	}
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestVolumeCRUD(t *testing.T) {
	c := openT(t, t.TempDir())
	v := &Volume{ID: "vol-1", Name: "db", Status: StatusAvailable, Size: 1 << 30,
		Path: "/srv/db.img", Driver: "file", Owned: true, AvailabilityZone: "nova",
		ProjectID: "p1", CreatedAt: t0, UpdatedAt: t0.Add(time.Second)}
	if err := c.Update(func(tx *Tx) error { return tx.PutVolume(v) }); err != nil {
		t.Fatal(err)
	}
	err := c.View(func(tx *Tx) error {
		got, err := tx.Volume("vol-1")
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, v) {
			t.Errorf("Volume = %+v, want %+v", got, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Replace.
	v2 := *v
	v2.Status = StatusInUse
	if err := c.Update(func(tx *Tx) error { return tx.PutVolume(&v2) }); err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		got, err := tx.Volume("vol-1")
		if err != nil || got.Status != StatusInUse {
			t.Errorf("after replace: %+v, %v", got, err)
		}
		return nil
	})
	// Delete, then every accessor says not found, naming kind and id.
	if err := c.Update(func(tx *Tx) error { return tx.DeleteVolume("vol-1") }); err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		_, err := tx.Volume("vol-1")
		wantNotFound(t, err, `volume "vol-1": not found`)
		vs, err := tx.Volumes()
		if err != nil || len(vs) != 0 {
			t.Errorf("Volumes after delete = %v, %v", vs, err)
		}
		return nil
	})
	err = c.Update(func(tx *Tx) error { return tx.DeleteVolume("vol-1") })
	wantNotFound(t, err, `volume "vol-1": not found`)
}

func wantNotFound(t *testing.T, err error, msg string) {
	t.Helper()
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if err.Error() != msg {
		t.Errorf("message %q, want %q", err.Error(), msg)
	}
}

func TestBackupCRUD(t *testing.T) {
	c := openT(t, t.TempDir())
	b := &Backup{ID: "bk-1", Name: "nightly", Description: "d", Status: StatusCreating,
		VolumeID: "vol-1", VolumeName: "db", ParentID: "bk-0", IsIncremental: true,
		SizeBytes: 1 << 30, ObjectCount: 12, StoredBytes: 4096, Container: "file:///r",
		RepositoryID: testRepo, ProjectID: "p1", ManifestDigest: "abc", RefsApplied: 3,
		MissingParent: true, CreatedAt: t0, UpdatedAt: t0, DataTimestamp: t0.Add(-time.Hour)}
	if err := c.Update(func(tx *Tx) error { return tx.PutBackup(b) }); err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		got, err := tx.Backup("bk-1")
		if err != nil || !reflect.DeepEqual(got, b) {
			t.Errorf("Backup = %+v, %v; want %+v", got, err, b)
		}
		_, err = tx.Backup("bk-2")
		wantNotFound(t, err, `backup "bk-2": not found`)
		return nil
	})
	if err := c.Update(func(tx *Tx) error { return tx.DeleteBackup("bk-1") }); err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		_, err := tx.Backup("bk-1")
		wantNotFound(t, err, `backup "bk-1": not found`)
		return nil
	})
	err := c.Update(func(tx *Tx) error { return tx.DeleteBackup("bk-1") })
	wantNotFound(t, err, `backup "bk-1": not found`)
}

func TestBadIDsRefused(t *testing.T) {
	c := openT(t, t.TempDir())
	for _, id := range []string{"", "a/b", "/"} {
		err := c.Update(func(tx *Tx) error { return tx.PutVolume(&Volume{ID: id}) })
		if err == nil {
			t.Errorf("PutVolume(%q) accepted", id)
		}
		err = c.Update(func(tx *Tx) error { return tx.PutBackup(&Backup{ID: id}) })
		if err == nil {
			t.Errorf("PutBackup(%q) accepted", id)
		}
		err = c.Update(func(tx *Tx) error { return tx.PutChunk(id, chunkID(1), testChunk(1)) })
		if err == nil {
			t.Errorf("PutChunk(repo %q) accepted", id)
		}
		err = c.View(func(tx *Tx) error { return tx.Chunks(id, func(chunkstore.ID, Chunk) error { return nil }) })
		if err == nil {
			t.Errorf("Chunks(repo %q) accepted", id)
		}
	}
	// Nothing was written by the refusals.
	c.View(func(tx *Tx) error {
		vs, _ := tx.Volumes()
		bs, _ := tx.Backups()
		if len(vs)+len(bs) != 0 {
			t.Errorf("refused puts left %d volumes, %d backups", len(vs), len(bs))
		}
		return nil
	})
}

func TestListsSorted(t *testing.T) {
	c := openT(t, t.TempDir())
	// Inserted out of order; ties on CreatedAt break by ID.
	ids := []struct {
		id string
		at time.Duration
	}{{"c", 2}, {"b", 1}, {"z", 0}, {"a", 1}, {"y", 3}}
	err := c.Update(func(tx *Tx) error {
		for _, x := range ids {
			at := t0.Add(x.at * time.Minute)
			if err := tx.PutVolume(&Volume{ID: x.id, CreatedAt: at}); err != nil {
				return err
			}
			if err := tx.PutBackup(&Backup{ID: x.id, CreatedAt: at}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "z a b c y"
	c.View(func(tx *Tx) error {
		vs, err := tx.Volumes()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range vs {
			got = append(got, v.ID)
		}
		if s := strings.Join(got, " "); s != want {
			t.Errorf("Volumes order %q, want %q", s, want)
		}
		bs, err := tx.Backups()
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, b := range bs {
			got = append(got, b.ID)
		}
		if s := strings.Join(got, " "); s != want {
			t.Errorf("Backups order %q, want %q", s, want)
		}
		return nil
	})
}

func TestChunkCRUD(t *testing.T) {
	c := openT(t, t.TempDir())
	id := chunkID(42)
	want := testChunk(42)
	c.View(func(tx *Tx) error {
		got, ok, err := tx.Chunk(testRepo, id)
		if ok || err != nil || got != (Chunk{}) {
			t.Errorf("missing chunk: %+v, %v, %v", got, ok, err)
		}
		return nil
	})
	if err := c.Update(func(tx *Tx) error { return tx.PutChunk(testRepo, id, want) }); err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		got, ok, err := tx.Chunk(testRepo, id)
		if !ok || err != nil || got != want {
			t.Errorf("Chunk = %+v, %v, %v; want %+v", got, ok, err, want)
		}
		if _, ok, _ := tx.Chunk("other-repo", id); ok {
			t.Error("chunk visible in another repository")
		}
		return nil
	})
	// Read-modify-write of the refcount.
	err := c.Update(func(tx *Tx) error {
		ch, _, err := tx.Chunk(testRepo, id)
		if err != nil {
			return err
		}
		ch.Refs++
		return tx.PutChunk(testRepo, id, ch)
	})
	if err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		got, _, _ := tx.Chunk(testRepo, id)
		if got.Refs != want.Refs+1 {
			t.Errorf("Refs = %d, want %d", got.Refs, want.Refs+1)
		}
		return nil
	})
	if err := c.Update(func(tx *Tx) error { return tx.DeleteChunk(testRepo, id) }); err != nil {
		t.Fatal(err)
	}
	// Deleting a missing chunk entry is allowed.
	if err := c.Update(func(tx *Tx) error { return tx.DeleteChunk(testRepo, id) }); err != nil {
		t.Fatalf("second DeleteChunk: %v", err)
	}
	c.View(func(tx *Tx) error {
		if _, ok, _ := tx.Chunk(testRepo, id); ok {
			t.Error("chunk still present after delete")
		}
		return nil
	})
}

func TestCorruptChunkEntryReported(t *testing.T) {
	c := openT(t, t.TempDir())
	id := chunkID(7)
	err := c.db.Update(func(txn *badger.Txn) error {
		return txn.Set(chunkKey(testRepo, id), []byte{1, 2, 3})
	})
	if err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		_, ok, err := tx.Chunk(testRepo, id)
		if ok || err == nil || !strings.Contains(err.Error(), "3 bytes, want 50") {
			t.Errorf("corrupt entry: ok=%v err=%v", ok, err)
		}
		err = tx.Chunks(testRepo, func(chunkstore.ID, Chunk) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "3 bytes") {
			t.Errorf("Chunks over corrupt entry: %v", err)
		}
		return nil
	})
}

func TestChunksPerRepo(t *testing.T) {
	c := openT(t, t.TempDir())
	// "a" is a prefix of "ab": the trailing '/' in the key keeps them apart.
	repos := map[string]int{"a": 300, "ab": 200, testRepo: 50}
	err := c.Update(func(tx *Tx) error {
		for repo, n := range repos {
			for i := range n {
				ch := testChunk(uint64(i))
				ch.Refs = uint32(len(repo)) // tags the entry with its repo
				if err := tx.PutChunk(repo, chunkID(uint64(i)), ch); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for repo, n := range repos {
		seen := map[chunkstore.ID]bool{}
		err := c.View(func(tx *Tx) error {
			return tx.Chunks(repo, func(id chunkstore.ID, ch Chunk) error {
				if ch.Refs != uint32(len(repo)) {
					return fmt.Errorf("chunk %x of another repository (refs %d) seen in %q", id[:], ch.Refs, repo)
				}
				want := testChunk(binary.BigEndian.Uint64(id[24:]))
				want.Refs = ch.Refs
				if ch != want || seen[id] {
					return fmt.Errorf("chunk %x: %+v (dup %v), want %+v", id[:], ch, seen[id], want)
				}
				seen[id] = true
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != n {
			t.Errorf("repo %q: %d chunks, want %d", repo, len(seen), n)
		}
	}
	// fn's error stops the iteration and comes back unchanged.
	stop := errors.New("stop")
	calls := 0
	err = c.View(func(tx *Tx) error {
		return tx.Chunks("a", func(chunkstore.ID, Chunk) error { calls++; return stop })
	})
	if err != stop || calls != 1 {
		t.Errorf("Chunks with failing fn: err=%v calls=%d", err, calls)
	}
	// Deleting while iterating in an Update (what GC does).
	err = c.Update(func(tx *Tx) error {
		return tx.Chunks("ab", func(id chunkstore.ID, _ Chunk) error { return tx.DeleteChunk("ab", id) })
	})
	if err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		n := 0
		tx.Chunks("ab", func(chunkstore.ID, Chunk) error { n++; return nil })
		m := 0
		tx.Chunks("a", func(chunkstore.ID, Chunk) error { m++; return nil })
		if n != 0 || m != 300 {
			t.Errorf("after deleting repo ab: ab=%d a=%d, want 0 and 300", n, m)
		}
		return nil
	})
}

func TestUpdateAtomic(t *testing.T) {
	c := openT(t, t.TempDir())
	boom := errors.New("boom")
	err := c.Update(func(tx *Tx) error {
		tx.PutVolume(&Volume{ID: "v"})
		tx.PutBackup(&Backup{ID: "b"})
		for i := range 100 {
			tx.PutChunk(testRepo, chunkID(uint64(i)), testChunk(uint64(i)))
		}
		return boom
	})
	if err != boom {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	assertEmpty(t, c)

	// A transaction that grows too big fails as a whole with ErrTxnTooBig.
	n := 0
	err = c.Update(func(tx *Tx) error {
		tx.PutBackup(&Backup{ID: "b"})
		for ; ; n++ {
			if err := tx.PutChunk(testRepo, chunkID(uint64(n)), testChunk(uint64(n))); err != nil {
				return err
			}
		}
	})
	if !errors.Is(err, ErrTxnTooBig) {
		t.Fatalf("oversized Update: %v, want ErrTxnTooBig", err)
	}
	t.Logf("one transaction holds %d chunk puts (MaxBatch %d): %v", n, MaxBatch, err)
	if n < 2*MaxBatch {
		t.Errorf("only %d chunk puts fit in a transaction; MaxBatch %d leaves too little margin", n, MaxBatch)
	}
	assertEmpty(t, c)
}

func assertEmpty(t *testing.T, c *Catalog) {
	t.Helper()
	c.View(func(tx *Tx) error {
		if _, err := tx.Volume("v"); !errors.Is(err, ErrNotFound) {
			t.Errorf("volume written by failed Update: %v", err)
		}
		if _, err := tx.Backup("b"); !errors.Is(err, ErrNotFound) {
			t.Errorf("backup written by failed Update: %v", err)
		}
		n := 0
		tx.Chunks(testRepo, func(chunkstore.ID, Chunk) error { n++; return nil })
		if n != 0 {
			t.Errorf("%d chunks written by failed Update", n)
		}
		return nil
	})
}

// TestMaxBatchFits is the contract callers rely on: MaxBatch chunk updates
// plus a large backup record commit in one transaction.
func TestMaxBatchFits(t *testing.T) {
	c := openT(t, t.TempDir())
	repo := strings.Repeat("r", 64) // longer than any uuid
	b := &Backup{ID: "bk", Description: strings.Repeat("x", 8<<10), Status: StatusAvailable}
	err := c.Update(func(tx *Tx) error {
		for i := range MaxBatch {
			if err := tx.PutChunk(repo, chunkID(uint64(i)), testChunk(uint64(i))); err != nil {
				return err
			}
		}
		return tx.PutBackup(b)
	})
	if err != nil {
		t.Fatalf("MaxBatch chunk puts + backup: %v", err)
	}
	// And deletes of as many (GC) plus another batch of puts.
	err = c.Update(func(tx *Tx) error {
		for i := range MaxBatch {
			if err := tx.DeleteChunk(repo, chunkID(uint64(i))); err != nil {
				return err
			}
		}
		return tx.DeleteBackup("bk")
	})
	if err != nil {
		t.Fatalf("MaxBatch chunk deletes + backup delete: %v", err)
	}
}

func TestUpdateRetriesConflict(t *testing.T) {
	c := openT(t, t.TempDir())
	id := chunkID(1)
	if err := c.Update(func(tx *Tx) error { return tx.PutChunk(testRepo, id, testChunk(1)) }); err != nil {
		t.Fatal(err)
	}
	bump := func(tx *Tx) error {
		ch, _, err := tx.Chunk(testRepo, id)
		if err != nil {
			return err
		}
		ch.Refs++
		return tx.PutChunk(testRepo, id, ch)
	}
	calls := 0
	err := c.Update(func(tx *Tx) error {
		calls++
		if calls == 1 { // someone else commits after our read: conflict, rerun
			if _, _, err := tx.Chunk(testRepo, id); err != nil {
				return err
			}
			if err := c.Update(bump); err != nil {
				return err
			}
		}
		return bump(tx)
	})
	if err != nil || calls != 2 {
		t.Fatalf("Update after one conflict: err=%v calls=%d, want nil and 2", err, calls)
	}
	c.View(func(tx *Tx) error {
		ch, _, _ := tx.Chunk(testRepo, id)
		if want := testChunk(1).Refs + 2; ch.Refs != want {
			t.Errorf("Refs = %d, want %d (no lost update)", ch.Refs, want)
		}
		return nil
	})
	// Endless conflicts give up with a clear error.
	calls = 0
	err = c.Update(func(tx *Tx) error {
		calls++
		tx.Chunk(testRepo, id)
		if err := c.Update(bump); err != nil {
			return err
		}
		return bump(tx)
	})
	if !errors.Is(err, badger.ErrConflict) || calls != updateAttempts || !strings.Contains(err.Error(), "conflicted") {
		t.Errorf("endless conflict: err=%v calls=%d", err, calls)
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Update(func(tx *Tx) error {
		if err := tx.PutVolume(&Volume{ID: "v", Name: "disk", CreatedAt: t0}); err != nil {
			return err
		}
		if err := tx.PutBackup(&Backup{ID: "b", Status: StatusAvailable, CreatedAt: t0}); err != nil {
			return err
		}
		for i := range 1000 {
			if err := tx.PutChunk(testRepo, chunkID(uint64(i)), testChunk(uint64(i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	c = openT(t, dir)
	c.View(func(tx *Tx) error {
		v, err := tx.Volume("v")
		if err != nil || v.Name != "disk" || !v.CreatedAt.Equal(t0) {
			t.Errorf("volume after reopen: %+v, %v", v, err)
		}
		b, err := tx.Backup("b")
		if err != nil || b.Status != StatusAvailable {
			t.Errorf("backup after reopen: %+v, %v", b, err)
		}
		n := 0
		tx.Chunks(testRepo, func(id chunkstore.ID, ch Chunk) error {
			if ch != testChunk(binary.BigEndian.Uint64(id[24:])) {
				t.Errorf("chunk %x = %+v", id[:], ch)
			}
			n++
			return nil
		})
		if n != 1000 {
			t.Errorf("%d chunks after reopen, want 1000", n)
		}
		return nil
	})
}

// TestDurableWithoutClose: a committed Update survives the process dying
// without Close (the child exits straight after Update returns).
func TestDurableWithoutClose(t *testing.T) {
	if os.Getenv("VOLBACK_INDEX_CHILD") == "crash" {
		c, err := Open(os.Getenv("VOLBACK_INDEX_DIR"), Options{})
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		err = c.Update(func(tx *Tx) error {
			return tx.PutBackup(&Backup{ID: "b", Status: StatusAvailable})
		})
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		os.Exit(0) // no Close
	}
	dir := t.TempDir()
	if out, err := child(t, "crash", dir, "TestDurableWithoutClose").CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	c := openT(t, dir)
	c.View(func(tx *Tx) error {
		b, err := tx.Backup("b")
		if err != nil || b.Status != StatusAvailable {
			t.Errorf("backup committed before exit: %+v, %v", b, err)
		}
		return nil
	})
}

func TestSchemaMismatchRefused(t *testing.T) {
	for _, tc := range []struct {
		val  string // nil-like "" means: records without a schema key
		want []string
	}{
		{"3", []string{"schema version 3", "reads version 2", "upgrade volback", "catalog-rebuild"}},
		{"0", []string{"schema version 0", "catalog-rebuild"}},
		{"x", []string{`unreadable schema version "x"`}},
		{"", []string{"no schema version", "catalog-rebuild"}},
	} {
		dir := t.TempDir()
		c := openT(t, dir)
		err := c.db.Update(func(txn *badger.Txn) error {
			if tc.val == "" {
				txn.Set(volumeKey("v"), []byte("{}"))
				return txn.Delete([]byte(keySchema))
			}
			return txn.Set([]byte(keySchema), []byte(tc.val))
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		c2, err := Open(dir, Options{})
		if err == nil {
			c2.Close()
			t.Fatalf("schema %q: Open succeeded", tc.val)
		}
		if !errors.Is(err, ErrSchema) {
			t.Errorf("schema %q: %v, want ErrSchema", tc.val, err)
		}
		for _, w := range append(tc.want, dir) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("schema %q: error %q lacks %q", tc.val, err, w)
			}
		}
		// The refusal released the lock and changed nothing: a good
		// schema opens again.
		db, err := badger.Open(badgerOptions(dir, false))
		if err != nil {
			t.Fatalf("after refusal: %v", err)
		}
		db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keySchema), []byte("2")) })
		db.Close()
		openT(t, dir).Close()
	}
}

// TestSchemaUpgrade: a version 1 catalog (every backup counted in full)
// opens as version 2, its records unchanged.
func TestSchemaUpgrade(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir)
	if err := c.Update(func(tx *Tx) error {
		return tx.PutBackup(&Backup{ID: "b", Status: StatusAvailable, RefsApplied: 3, ObjectCount: 3})
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keySchema), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = openT(t, dir)
	defer c.Close()
	c.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keySchema))
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := item.ValueCopy(nil); string(v) != "2" {
			t.Errorf("schema after upgrade = %q, want \"2\"", v)
		}
		return nil
	})
	c.View(func(tx *Tx) error {
		if b, err := tx.Backup("b"); err != nil || !b.FullyCounted() || b.RefsBase != "" {
			t.Errorf("backup after upgrade: %+v, %v", b, err)
		}
		return nil
	})
}

func TestNewCatalogSchema(t *testing.T) {
	dir := t.TempDir() + "/deep/home"
	c := openT(t, dir)
	c.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keySchema))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := item.ValueCopy(nil)
		if string(v) != "2" {
			t.Errorf("schema = %q, want \"2\"", v)
		}
		return nil
	})
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("catalog dir mode %v, %v; want 0700", fi.Mode(), err)
	}
}

func TestLockedSameProcess(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir)
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	for _, w := range []string{"another volback process", dir, fmt.Sprintf("pid %d", os.Getpid())} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	// The refused Open did not disturb the owner.
	if err := c.Update(func(tx *Tx) error { return tx.PutVolume(&Volume{ID: "v"}) }); err != nil {
		t.Fatalf("owner after refused Open: %v", err)
	}
	c.Close()
	c2 := openT(t, dir)
	if err := c2.View(func(tx *Tx) error { _, err := tx.Volume("v"); return err }); err != nil {
		t.Fatal(err)
	}
}

// child re-executes the test binary running only test name in mode.
func child(t *testing.T, mode, dir, name string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.v")
	cmd.Env = append(os.Environ(), "VOLBACK_INDEX_CHILD="+mode, "VOLBACK_INDEX_DIR="+dir)
	return cmd
}

func TestLockedChildProcess(t *testing.T) {
	switch os.Getenv("VOLBACK_INDEX_CHILD") {
	case "open":
		c, err := Open(os.Getenv("VOLBACK_INDEX_DIR"), Options{})
		if errors.Is(err, ErrLocked) {
			fmt.Printf("LOCKED: %v\n", err)
			os.Exit(0)
		}
		if err != nil {
			fmt.Printf("ERROR: %v\n", err)
			os.Exit(3)
		}
		c.Close()
		fmt.Println("OPENED")
		os.Exit(0)
	case "":
	default:
		return
	}
	dir := t.TempDir()
	c := openT(t, dir)
	out, err := child(t, "open", dir, "TestLockedChildProcess").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "LOCKED: ") ||
		!strings.Contains(string(out), fmt.Sprintf("another volback process (pid %d) owns the catalog at %s", os.Getpid(), dir)) {
		t.Fatalf("child Open while we own %s: %v\n%s", dir, err, out)
	}
	c.Close()
	out, err = child(t, "open", dir, "TestLockedChildProcess").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OPENED") {
		t.Fatalf("child Open after Close: %v\n%s", err, out)
	}
}

func TestInMemory(t *testing.T) {
	c, err := Open("", Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Update(func(tx *Tx) error {
		if err := tx.PutVolume(&Volume{ID: "v"}); err != nil {
			return err
		}
		return tx.PutChunk(testRepo, chunkID(1), testChunk(1))
	})
	if err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		if _, err := tx.Volume("v"); err != nil {
			t.Error(err)
		}
		if ch, ok, err := tx.Chunk(testRepo, chunkID(1)); !ok || err != nil || ch != testChunk(1) {
			t.Errorf("chunk: %+v %v %v", ch, ok, err)
		}
		return nil
	})
	// Two in-memory catalogs are independent.
	c2, err := Open("", Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.View(func(tx *Tx) error {
		if _, err := tx.Volume("v"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second in-memory catalog sees the first: %v", err)
		}
		return nil
	})
}

func TestViewIsReadOnly(t *testing.T) {
	c := openT(t, t.TempDir())
	err := c.View(func(tx *Tx) error { return tx.PutVolume(&Volume{ID: "v"}) })
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("PutVolume in View: %v", err)
	}
}

// TestSpillScopes: staged locations and counts live apart from the chunk
// index, join with it in id order, and go with their scope.
func TestSpillScopes(t *testing.T) {
	c := openT(t, t.TempDir())
	repo := testRepo
	ids := []chunkstore.ID{chunkstore.Sum([]byte("a")), chunkstore.Sum([]byte("b")), chunkstore.Sum([]byte("c"))}
	loc := chunkstore.Location{Pack: chunkstore.Sum([]byte("p")), Offset: 8, Length: 100, RawLength: 300, Codec: chunkstore.CodecZstd}
	err := c.Update(func(tx *Tx) error {
		if err := tx.PutChunk(repo, ids[0], Chunk{Location: loc, Refs: 2}); err != nil {
			return err
		}
		if err := tx.PutChunk(repo, ids[1], Chunk{Location: loc, Refs: 1}); err != nil {
			return err
		}
		for _, id := range []chunkstore.ID{ids[0], ids[2], ids[2]} {
			if err := tx.AddCount("s1", id, 1); err != nil {
				return err
			}
		}
		if err := tx.PutStaged("s1", ids[2], loc); err != nil {
			return err
		}
		other := loc
		other.Offset = 99
		return tx.PutStaged("s1", ids[2], other) // the first location stays
	})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		found bool
		refs  uint32
		count uint32
	}
	got := map[chunkstore.ID]row{}
	var order []chunkstore.ID
	err = c.View(func(tx *Tx) error {
		if l, ok, err := tx.Staged("s1", ids[2]); err != nil || !ok || l != loc {
			t.Fatalf("staged %v %v %v", l, ok, err)
		}
		if _, ok, _ := tx.Chunk(repo, ids[2]); ok {
			t.Fatal("a staged location is in the chunk index")
		}
		return tx.CountJoin(repo, "s1", func(id chunkstore.ID, ch Chunk, found bool, n uint32) error {
			got[id] = row{found, ch.Refs, n}
			order = append(order, id)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[chunkstore.ID]row{ids[0]: {true, 2, 1}, ids[1]: {true, 1, 0}, ids[2]: {false, 0, 2}}
	if len(got) != 3 {
		t.Fatalf("join %v", got)
	}
	for id, w := range want {
		if got[id] != w {
			t.Fatalf("chunk %s: %+v, want %+v", id, got[id], w)
		}
	}
	for i := 1; i < len(order); i++ {
		if string(order[i-1][:]) >= string(order[i][:]) {
			t.Fatal("join not in id order")
		}
	}
	if err := c.DropScope("s1"); err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		if _, ok, _ := tx.Staged("s1", ids[2]); ok {
			t.Fatal("staged location survived DropScope")
		}
		n := 0
		tx.CountJoin(repo, "s1", func(chunkstore.ID, Chunk, bool, uint32) error { n++; return nil })
		if n != 2 {
			t.Fatalf("%d rows after the scope was dropped, want the 2 chunks", n)
		}
		return nil
	})
	// Paging through the chunk index.
	var seen []chunkstore.ID
	var after *chunkstore.ID
	for {
		var last chunkstore.ID
		var done bool
		c.View(func(tx *Tx) (err error) {
			last, done, err = tx.ChunksAfter(repo, after, 1, func(id chunkstore.ID, _ Chunk) error { seen = append(seen, id); return nil })
			return err
		})
		if done {
			break
		}
		after = &last
	}
	if len(seen) != 2 {
		t.Fatalf("paged through %d entries, want 2", len(seen))
	}
}

// TestLossEpoch: putting a lost entry advances its repository's epoch
// (once per entry, also within one transaction); other puts do not.
func TestLossEpoch(t *testing.T) {
	c := openT(t, t.TempDir())
	epoch := func(repo string) uint64 {
		t.Helper()
		var n uint64
		if err := c.View(func(tx *Tx) (err error) { n, err = tx.LossEpoch(repo); return err }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := epoch(testRepo); n != 0 {
		t.Fatalf("a new catalog's epoch is %d", n)
	}
	lost := testChunk(1)
	lost.MarkLost()
	err := c.Update(func(tx *Tx) error {
		if err := tx.PutChunk(testRepo, chunkID(101), testChunk(101)); err != nil {
			return err
		}
		if err := tx.PutChunk(testRepo, chunkID(2), lost); err != nil {
			return err
		}
		return tx.PutChunk(testRepo, chunkID(3), lost)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := epoch(testRepo); n != 2 {
		t.Errorf("after two lost entries the epoch is %d, want 2", n)
	}
	if n := epoch("other-repo"); n != 0 {
		t.Errorf("another repository's epoch moved to %d", n)
	}
}

// TestChunksOf: the sorted lookup of a list of ids says for each what a
// Get says, in a catalog spread over flushed tables and the memtable,
// with deleted, missing, repeated ids and another repository's.
func TestChunksOf(t *testing.T) {
	c := openT(t, t.TempDir())
	const n = 5000
	other := "0b7d1e2a-3c4f-4a5b-8c6d-7e8f9a0b1c2d"
	for start := 0; start < n; start += MaxBatch {
		err := c.Update(func(tx *Tx) error {
			for i := start; i < min(start+MaxBatch, n); i++ {
				if err := tx.PutChunk(testRepo, chunkID(uint64(i)), testChunk(uint64(i))); err != nil {
					return err
				}
				if err := tx.PutChunk(other, chunkID(uint64(n+i)), testChunk(uint64(i))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.db.Flatten(2); err != nil {
		t.Fatal(err)
	}
	err := c.Update(func(tx *Tx) error {
		for i := uint64(0); i < n; i += 7 {
			if err := tx.DeleteChunk(testRepo, chunkID(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := []chunkstore.ID{chunkID(n + 3), chunkID(3), chunkID(3), chunkID(7), chunkID(2 * n), chunkID(n - 1), chunkID(0)}
	for i := range 3000 {
		ids = append(ids, chunkID(uint64(i*7919)%(n+200)))
	}
	for _, list := range [][]chunkstore.ID{nil, ids[:1], ids} {
		seen := make([]int, len(list))
		err := c.View(func(tx *Tx) error {
			return tx.ChunksOf(testRepo, list, func(k int, got Chunk, ok bool) error {
				seen[k]++
				want, wantOK, err := tx.Chunk(testRepo, list[k])
				if err != nil {
					return err
				}
				if ok != wantOK || got != want {
					t.Errorf("id %d (%x): ChunksOf says %v %+v, Get says %v %+v", k, list[k][:4], ok, got, wantOK, want)
				}
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		for k, s := range seen {
			if s != 1 {
				t.Fatalf("id %d reported %d times", k, s)
			}
		}
	}
}
