package service

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestStaleStoredStoresAgain: a backup's chunk lookups read a snapshot of
// the catalog that may miss what was committed since (here: never
// renewed). A chunk met again after its first copy's pack was committed
// is then stored a second time. Nothing may be lost or miscounted: the
// backup restores, the recount agrees, and deleting it leaves nothing.
func TestStaleStoredStoresAgain(t *testing.T) {
	old := storedRefresh
	storedRefresh = time.Hour
	t.Cleanup(func() { storedRefresh = old })
	ctx := context.Background()
	// 16 KiB chunks: a segment then covers 256 MiB, not 1 GiB.
	home := t.TempDir()
	writeFile(t, filepath.Join(home, ConfigName), []byte("chunk_size = \"16K\"\n"))
	s := newServiceAt(t, home)
	// 32 MiB of random data at the start of a sparse image, and its first
	// 8 MiB again 256 MiB later, in the next segment (within one, a repeat
	// is known without a lookup). When the hashers reach the repeat, the
	// pack holding the first copy has been committed (a backup fills at
	// most two pack buffers ahead of its commits) and is no longer
	// pending, and the snapshot predates it.
	first := make([]byte, 32<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < len(first); i += 8 {
		binary.LittleEndian.PutUint64(first[i:], r.Uint64())
	}
	img := filepath.Join(t.TempDir(), "vol.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	const repeat = 256 << 20
	_, err = f.WriteAt(first, 0)
	if err == nil {
		_, err = f.WriteAt(first[:8<<20], repeat)
	}
	if err := errors.Join(err, f.Close()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Manage(ctx, ManageRequest{Name: "vol", Source: img}); err != nil {
		t.Fatal(err)
	}
	b := mustBackup(t, s, "vol")
	t.Logf("stored %d bytes", b.StoredBytes)
	if b.StoredBytes <= 36<<20 {
		t.Fatalf("stored %d bytes: the repeated 8 MiB were found in the stale snapshot, so this test no longer tests storing again", b.StoredBytes)
	}
	// Compared piece by piece: the image is mostly a hole.
	rv, err := s.Restore(ctx, RestoreRequest{Backup: b.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.ShowVolume(ctx, rv.VolumeID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.Open(v.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	zero, piece := make([]byte, 8<<20), make([]byte, 8<<20)
	for off := int64(0); off < repeat+8<<20; off += int64(len(piece)) {
		want := zero
		if off < int64(len(first)) {
			want = first[off : off+int64(len(piece))]
		} else if off >= repeat {
			want = first[off-repeat : off-repeat+int64(len(piece))]
		}
		if _, err := got.ReadAt(piece, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(piece, want) {
			t.Fatalf("restored bytes differ from the volume's in [%d, %d)", off, off+int64(len(piece)))
		}
	}
	mustCheck(t, s)
	if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.ID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, GCRequest{Grace: "0"}); err != nil {
		t.Fatal(err)
	}
	if rep := mustCheck(t, s); rep.Packs != 0 || rep.Chunks != 0 {
		t.Fatalf("after deleting the only backup and a GC: %d packs, %d chunks left", rep.Packs, rep.Chunks)
	}
}
