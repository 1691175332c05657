package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/chunkstore/crypt"
	"github.com/volback/volback/drivers/repo"
)

// durabilityChecks makes the repository and the catalog refuse, and
// record, any write out of the order a backup promises:
//   - a pack's entries are committed only once the pack object is stored
//     (its Put returned: durable);
//   - a manifest segment is stored only once every chunk it names is
//     committed, in a pack that is stored;
//   - the head only after all its segments, each checked as above.
func durabilityChecks(t *testing.T, s *chunkstore.Store, be *testRepo, cat *mapCatalog) *[]string {
	var mu sync.Mutex
	var violations []string
	bad := func(format string, a ...any) error {
		mu.Lock()
		defer mu.Unlock()
		violations = append(violations, fmt.Sprintf(format, a...))
		return errors.New("ordering violated: " + fmt.Sprintf(format, a...))
	}
	stored := func(pack chunkstore.ID) bool {
		_, err := be.Backend.Stat(context.Background(), packName(pack))
		return err == nil
	}
	cat.onCommit = func(pack chunkstore.ID) error {
		if !stored(pack) {
			return bad("pack %s committed before it was stored", pack)
		}
		return nil
	}
	committed := func(ids []chunkstore.ID, what string) error {
		cat.mu.Lock()
		defer cat.mu.Unlock()
		for _, id := range ids {
			loc, ok := cat.locs[id]
			if !ok {
				return bad("%s names chunk %s before its pack was committed", what, id)
			}
			if !stored(loc.Pack) {
				return bad("%s names chunk %s in pack %s, which is not stored", what, id, loc.Pack)
			}
		}
		return nil
	}
	segments := map[string]int{} // backup -> segments stored
	be.onPut = func(name string, data []byte) error {
		rest, ok := strings.CutPrefix(name, "manifests/")
		if !ok {
			return nil
		}
		if backup, _, isSeg := strings.Cut(rest, "."); isSeg {
			g, _, err := chunkstore.DecodeSegment(data)
			if err != nil {
				return bad("segment %s does not decode: %v", name, err)
			}
			mu.Lock()
			segments[backup]++
			mu.Unlock()
			return committed(g.IDs, "segment "+name)
		}
		m, _, err := chunkstore.DecodeManifest(data)
		if err != nil {
			return bad("head %s does not decode: %v", name, err)
		}
		mu.Lock()
		n := segments[rest]
		mu.Unlock()
		if n != len(m.Segments) {
			return bad("head %s names %d segments, %d stored before it", name, len(m.Segments), n)
		}
		for k := range m.Segments {
			g, err := s.LoadSegment(context.Background(), rest, m, k)
			if err != nil {
				return bad("head %s: segment %d: %v", name, k, err)
			}
			if err := committed(g.IDs, fmt.Sprintf("head %s (segment %d)", name, k)); err != nil {
				return err
			}
		}
		return nil
	}
	return &violations
}

// TestBackupDurabilityOrder: with uploads slower than hashing and a slow
// catalog, over several segments and many packs, every commit comes after
// what it names is durable: pack entries after the pack, segments after
// their chunks' packs, the head after all segments. The backup then
// restores exactly.
func TestBackupDurabilityOrder(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	s.SetPackSize(96 << 10)
	be.putDelay.Store(int64(3 * time.Millisecond))
	cat := newMapCatalog()
	cat.slow = time.Millisecond
	violations := durabilityChecks(t, s, be, cat)
	seg := testSegment
	vol := make([]byte, 3*seg*cs)
	for slot := range 3 {
		copy(vol[slot*seg*cs:], mixedVolume(cs, 150, uint64(slot+40)))
	}
	m := backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: 1})
	if len(*violations) > 0 {
		t.Fatalf("ordering violated: %v", *violations)
	}
	if len(m.Segments) != 3 || len(cat.packs) < 10 {
		t.Fatalf("%d segments, %d packs: the test needs several of each", len(m.Segments), len(cat.packs))
	}
	if got := restoreBytes(t, s, cat, "b", m); !bytes.Equal(got, vol) {
		t.Fatal("restore differs")
	}
	// The checks do catch a violation: a catalog that commits a pack
	// before its Put returned is refused (the check is not vacuous).
	s2, be2 := newTestStore(t, cs)
	cat2 := newMapCatalog()
	durabilityChecks(t, s2, be2, cat2)
	err := cat2.CommitPack(context.Background(), chunkstore.ID{7}, nil)
	if err == nil || !strings.Contains(err.Error(), "before it was stored") {
		t.Fatalf("a commit of an unstored pack passed: %v", err)
	}
}

// storedPrefix is how many segments of backup are stored (always a
// prefix 0..k-1) and their ID-table lengths' sum: the references a
// rollback would release.
func storedPrefix(t *testing.T, be *testRepo, backup string) (int, int64) {
	t.Helper()
	var refs int64
	k := 0
	for ; ; k++ {
		data, err := be.Backend.Get(context.Background(), chunkstore.SegmentName(backup, k))
		if errors.Is(err, repo.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		g, _, err := chunkstore.DecodeSegment(data)
		if err != nil {
			t.Fatal(err)
		}
		refs += int64(len(g.IDs))
	}
	return k, refs
}

// TestBackupSourceErrorCommitsNothing: an I/O error at a chosen offset in
// the third segment fails the backup with an error that names the offset
// of the failed read; no head is stored (the backup cannot become
// available), the counted references are exactly those of the stored
// segments (a prefix a rollback releases), and the failing segment is
// not among them.
func TestBackupSourceErrorCommitsNothing(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	seg := testSegment
	vol := make([]byte, 3*seg*cs)
	for slot := range 3 {
		copy(vol[slot*seg*cs:], mixedVolume(cs, 200, uint64(slot+50)))
	}
	src := newSource(vol)
	failChunk := int64(2*seg + 70) // in slot 2
	src.failAt = failChunk*int64(cs) + 123
	cat := newMapCatalog()
	violations := durabilityChecks(t, s, be, cat)
	_, err := Backup(context.Background(), BackupInput{Store: s, Catalog: cat, BackupID: "b", Source: src, Size: int64(len(vol)),
		Read: []Range{{0, 200}, {int64(seg), int64(seg + 200)}, {int64(2 * seg), int64(2*seg + 200)}}, Readers: 1})
	if !errors.Is(err, errDisk) {
		t.Fatalf("err = %v, want the source's error", err)
	}
	// Reads are of up to 1 MiB (64 chunks), from the start of each range.
	blockOff := int64(2*seg+64) * int64(cs)
	if want := fmt.Sprintf("byte offset %d", blockOff); !strings.Contains(err.Error(), want) {
		t.Fatalf("error does not name the failed read's offset (%s): %v", want, err)
	}
	if _, err := be.Backend.Stat(context.Background(), chunkstore.ManifestName("b")); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("a failed backup stored its head: %v", err)
	}
	n, refs := storedPrefix(t, be, "b")
	if n > 2 {
		t.Fatalf("%d segments stored: the failing slot's segment was stored", n)
	}
	if cat.counted != refs {
		t.Fatalf("%d references counted, the %d stored segments list %d", cat.counted, n, refs)
	}
	if len(*violations) > 0 {
		t.Fatalf("ordering violated: %v", *violations)
	}
}

// TestBackupCancelMidStream: cancelled while packs upload and segments
// commit, the backup returns the cancellation promptly; afterwards
// nothing is written, no head exists, and what was counted is exactly the
// stored segments' prefix.
func TestBackupCancelMidStream(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	s.SetPackSize(64 << 10)
	be.putDelay.Store(int64(2 * time.Millisecond))
	seg := testSegment
	vol := make([]byte, 4*seg*cs)
	for slot := range 4 {
		copy(vol[slot*seg*cs:], mixedVolume(cs, seg, uint64(slot+60)))
	}
	cat := newMapCatalog()
	durabilityChecks(t, s, be, cat)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Cancel once the first segment's references are counted.
		for {
			cat.mu.Lock()
			c := cat.counted
			cat.mu.Unlock()
			if c > 0 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	start := time.Now()
	_, err := Backup(ctx, BackupInput{Store: s, Catalog: cat, BackupID: "b", Source: newSource(vol), Size: int64(len(vol)),
		Read: []Range{{0, int64(4 * seg)}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	objects := func() int {
		n := 0
		be.Backend.List(context.Background(), "", func(repo.Info) error { n++; return nil })
		return n
	}
	before := objects()
	time.Sleep(100 * time.Millisecond)
	if after := objects(); after != before {
		t.Fatalf("objects went from %d to %d after Backup returned", before, after)
	}
	if _, err := be.Backend.Stat(context.Background(), chunkstore.ManifestName("b")); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("a cancelled backup stored its head: %v", err)
	}
	n, refs := storedPrefix(t, be, "b")
	if n == 0 || n == 4 || cat.counted != refs {
		t.Fatalf("%d segments stored listing %d refs, %d counted: want a proper prefix, counted exactly", n, refs, cat.counted)
	}
}

// TestBackupSlowRepositoryBounded: a repository far slower than
// hashing holds the pipeline back instead of queueing packs in memory:
// uploads in flight never exceed the uploaders (2) plus a segment or
// head, and the backup is exact.
func TestBackupSlowRepositoryBounded(t *testing.T) {
	cs := 16 << 10
	s, be := newTestStore(t, cs)
	s.SetPackSize(64 << 10)
	be.putDelay.Store(int64(5 * time.Millisecond))
	vol := mixedVolume(cs, 500, 70)
	cat := newMapCatalog()
	var open, peakOpen int
	var mu sync.Mutex
	be.onPut = func(name string, _ []byte) error {
		if strings.HasPrefix(name, "packs/") {
			mu.Lock()
			open++
			peakOpen = max(peakOpen, open)
			mu.Unlock()
		}
		return nil
	}
	cat.onCommit = func(chunkstore.ID) error {
		mu.Lock()
		open--
		mu.Unlock()
		return nil
	}
	m := backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: 1})
	if len(cat.packs) < 40 {
		t.Fatalf("only %d packs", len(cat.packs))
	}
	if p := be.peak.Load(); p > 3 {
		t.Fatalf("%d Puts in flight at once with 2 uploaders", p)
	}
	if peakOpen > 3 {
		t.Fatalf("%d packs uploaded but not committed at once", peakOpen)
	}
	if got := restoreBytes(t, s, cat, "b", m); !bytes.Equal(got, vol) {
		t.Fatal("restore differs")
	}
}

// TestBackupEncrypted: in an encrypted repository the pipeline names
// chunks by the keyed id, seals blobs and segments, and the backup
// restores and reads through an image exactly; nothing stored shows the
// plaintext or a plain chunk id.
func TestBackupEncrypted(t *testing.T) {
	cs := 16 << 10
	_, be := newTestStore(t, cs) // a fresh repository for the encrypted store
	be.Backend.Delete(context.Background(), "config")
	s, err := chunkstore.InitWith(context.Background(), be, chunkstore.InitOptions{ChunkSize: cs,
		Encryption: crypt.AES256GCM, Password: []byte("pw"), KDF: crypt.KDF{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetSegmentChunks(testSegment); err != nil {
		t.Fatal(err)
	}
	marker := []byte("SECRET-MARKER-4417")
	vol := make([]byte, (testSegment+300)*cs)
	copy(vol, mixedVolume(cs, 300, 80))
	copy(vol[testSegment*cs:], mixedVolume(cs, 300, 81))
	for off := 0; off < len(vol); off += 5 * cs {
		copy(vol[off:], marker)
	}
	cat := newMapCatalog()
	m := backupBytes(t, s, cat, "b", vol, chunkstore.Compression{Level: 1})
	if len(m.Segments) != 2 {
		t.Fatalf("%d segments", len(m.Segments))
	}
	id, ok := chunkAt(t, s, "b", m, 0)
	if !ok || id != s.ChunkID(vol[:cs]) || id == Sum(vol[:cs]) {
		t.Fatalf("chunk 0 is named %s, want the keyed id", id)
	}
	err = be.Backend.List(context.Background(), "", func(i repo.Info) error {
		data, err := be.Backend.Get(context.Background(), i.Name)
		if err != nil {
			return err
		}
		if bytes.Contains(data, marker) || bytes.Contains(data, []byte("VBMSEG03")) || bytes.Contains(data, []byte("VBMHEAD3")) {
			return fmt.Errorf("%s shows plaintext", i.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := restoreBytes(t, s, cat, "b", m); !bytes.Equal(got, vol) {
		t.Fatal("restore differs")
	}
	im := OpenImage(s, "b", m, cat, ImageOptions{ReadAhead: 4})
	defer im.Close()
	all := make([]byte, len(vol))
	if n, err := im.ReadAt(all, 0); n != len(vol) || err != nil || !bytes.Equal(all, vol) {
		t.Fatalf("image read: %d %v", n, err)
	}
}
