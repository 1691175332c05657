package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/volback/volback/chunkstore/crypt"
)

// cheapKDF keeps the tests fast; the format records the cost.
var cheapKDF = crypt.KDF{Time: 1, MemoryKiB: 64, Threads: 1}

func initEncrypted(t testing.TB, be *memRepo, cipherName, password string) *Store {
	t.Helper()
	s, err := InitWith(context.Background(), be, InitOptions{ChunkSize: 64 << 10, Encryption: cipherName, Password: []byte(password), KDF: cheapKDF})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// objects snapshots a memRepo's objects.
func objects(be *memRepo) map[string][]byte {
	be.mu.Lock()
	defer be.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range be.objs {
		out[k] = append([]byte(nil), v...)
	}
	return out
}

const marker = "PLAINTEXT-MARKER-7f3a9c"

// writeBackup stores chunks holding the marker through a packer, and a
// manifest and record naming a secret volume; it returns what it wrote.
func writeBackup(t *testing.T, s *Store) ([][]byte, []PackEntry, *Manifest, *Record) {
	t.Helper()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 5))
	var chunks [][]byte
	for i := range 6 {
		c := append([]byte(strings.Repeat(marker, 50)), textBytes(r, 64<<10)...)[:64<<10]
		if i%2 == 1 {
			c = append([]byte(marker), randomBytes(r, 64<<10)...)[:64<<10] // stored raw
		}
		chunks = append(chunks, c)
	}
	col := &collector{}
	p := s.NewPacker(ctx, Compression{Level: 3}, PackerOptions{Uploaders: 2, Commit: col.commit})
	w := s.NewManifestWriter("b1", int64(len(chunks))*64<<10)
	g := w.Manifest().NewSegment(0)
	for i, c := range chunks {
		id := s.ChunkID(c)
		g.Set(int64(i), id)
		if _, _, err := p.Add(id, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	entries := col.all()
	if _, _, err := w.Put(ctx, g); err != nil {
		t.Fatal(err)
	}
	digest, err := w.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := w.Manifest()
	rec := &Record{FormatVersion: RecordVersion, ID: "7d0c3f7e-1b8e-4a4e-9a63-2f1f7d7b5a10", Name: "nightly-" + marker,
		VolumeName: "secret-volume-" + marker, VolumeID: "11111111-1b8e-4a4e-9a63-2f1f7d7b5a10", SizeBytes: m.Size,
		ChunkSize: 64 << 10, ManifestDigest: digest.String(), CreatedAt: time.Now().UTC(), DataTimestamp: time.Now().UTC()}
	if err := s.PutRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	return chunks, entries, m, rec
}

func TestEncryptedRoundTrip(t *testing.T) {
	for _, c := range crypt.Ciphers {
		t.Run(c, func(t *testing.T) {
			ctx := context.Background()
			be := newMemRepo()
			s := initEncrypted(t, be, c, "pw")
			chunks, entries, m, rec := writeBackup(t, s)

			// Nothing in the repository shows the marker, the volume's
			// name, or a chunk's plain BLAKE3 id.
			for name, data := range objects(be) {
				if bytes.Contains(data, []byte(marker)) || bytes.Contains(data, []byte("secret-volume")) || strings.Contains(name, marker) {
					t.Fatalf("object %s shows the plaintext", name)
				}
				for _, ch := range chunks {
					id := Sum(ch)
					if bytes.Contains(data, id[:]) || strings.Contains(name, id.String()) {
						t.Fatalf("object %s shows a chunk's unkeyed id", name)
					}
				}
			}

			// A second process opens it locked, then unlocks it.
			s2, err := Open(ctx, be)
			if err != nil {
				t.Fatal(err)
			}
			if s2.Unlocked() || !s2.Encrypted() {
				t.Fatal("opened unlocked")
			}
			if _, err := s2.ReadChunk(ctx, entries[0].ID, entries[0].Location, nil); !errors.Is(err, ErrNeedKey) {
				t.Fatalf("locked read: %v", err)
			}
			if _, _, err := s2.LoadManifest(ctx, "b1"); !errors.Is(err, ErrNeedKey) {
				t.Fatalf("locked manifest: %v", err)
			}
			if err := s2.Unlock(ctx, []byte("pw")); err != nil {
				t.Fatal(err)
			}
			for i, ch := range chunks {
				id := s2.ChunkID(ch)
				if id == Sum(ch) {
					t.Fatal("chunk id is the unkeyed hash")
				}
				var loc Location
				for _, e := range entries {
					if e.ID == id {
						loc = e.Location
					}
				}
				got, err := s2.ReadChunk(ctx, id, loc, nil)
				if err != nil || !bytes.Equal(got, ch) {
					t.Fatalf("chunk %d: %v", i, err)
				}
			}
			m2, digest, err := s2.LoadManifest(ctx, "b1")
			if err != nil || digest.String() != rec.ManifestDigest || m2.Size != m.Size || len(m2.Segments) != 1 {
				t.Fatalf("manifest: %v", err)
			}
			// The sealed segment reads back, and each chunk through the
			// hot path (in place, as restore and mount read).
			g, err := s2.LoadSegment(ctx, "b1", m2, 0)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5+s2.BlobOverhead()+64<<10+ZstdSlack)
			for i, ch := range chunks {
				id, ok := g.Chunk(int64(i))
				if !ok || id != s2.ChunkID(ch) {
					t.Fatalf("segment chunk %d: %s", i, id)
				}
				var loc Location
				for _, e := range entries {
					if e.ID == id {
						loc = e.Location
					}
				}
				got, err := s2.ReadChunkInto(ctx, id, loc, buf)
				if err != nil || !bytes.Equal(got, ch) {
					t.Fatalf("chunk %d read in place: %v", i, err)
				}
			}
			r2, err := s2.GetRecord(ctx, rec.ID)
			if err != nil {
				// stored under the record's own id
				t.Fatal(err)
			}
			if r2.VolumeName != rec.VolumeName {
				t.Fatal("record differs")
			}
			packs := map[ID]bool{}
			for _, e := range entries {
				packs[e.Pack] = true
			}
			n := 0
			for p := range packs {
				got, err := s2.ReadPackEntries(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				n += len(got)
				data := objects(be)[packName(p)]
				if Sum(data) != p {
					t.Fatal("pack name is not the hash of its bytes")
				}
				parsed, err := s2.ParseSealedPack(data)
				if err != nil || len(parsed) != len(got) {
					t.Fatalf("ParseSealedPack: %v", err)
				}
			}
			if n != len(entries) {
				t.Fatalf("trailers list %d chunks, want %d", n, len(entries))
			}
		})
	}
}

func TestEncryptedFlippedBytes(t *testing.T) {
	ctx := context.Background()
	be := newMemRepo()
	s := initEncrypted(t, be, crypt.AES256GCM, "pw")
	_, entries, _, rec := writeBackup(t, s)
	flip := func(name string, at int) func() {
		be.mu.Lock()
		defer be.mu.Unlock()
		old := append([]byte(nil), be.objs[name]...)
		be.objs[name][at] ^= 0x40
		return func() { be.mu.Lock(); be.objs[name] = old; be.mu.Unlock() }
	}
	e := entries[0]
	// A byte inside a chunk's sealed blob.
	undo := flip(packName(e.Pack), int(e.Offset)+int(e.Length)/2)
	if _, err := s.ReadChunk(ctx, e.ID, e.Location, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped chunk byte: %v", err)
	}
	undo()
	// A byte of the sealed trailer.
	size := len(objects(be)[packName(e.Pack)])
	undo = flip(packName(e.Pack), size-sealedPackFooterSize-5)
	if _, err := s.ReadPackEntries(ctx, e.Pack); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped trailer byte: %v", err)
	}
	undo()
	// A byte of the manifest and of the record.
	undo = flip(ManifestName("b1"), 20)
	if _, _, err := s.LoadManifest(ctx, "b1"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped manifest byte: %v", err)
	}
	undo()
	undo = flip(SegmentName("b1", 0), 20)
	m, _, err := s.LoadManifest(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadSegment(ctx, "b1", m, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped segment byte: %v", err)
	}
	undo()
	undo = flip(RecordName(rec.ID), 30)
	if _, err := s.GetRecord(ctx, rec.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped record byte: %v", err)
	}
	undo()
	// A manifest moved to another backup's name does not open.
	be.mu.Lock()
	be.objs[ManifestName("b2")] = be.objs[ManifestName("b1")]
	be.mu.Unlock()
	if _, _, err := s.LoadManifest(ctx, "b2"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("moved manifest: %v", err)
	}
	// A segment moved to another backup's name, or another position,
	// does not open either (its name is in the associated data).
	be.mu.Lock()
	be.objs[SegmentName("b2", 0)] = be.objs[SegmentName("b1", 0)]
	be.objs[SegmentName("b1", 1)] = be.objs[SegmentName("b1", 0)]
	be.mu.Unlock()
	for _, name := range []string{"b2", "b1"} {
		k := 0
		if name == "b1" {
			k = 1
		}
		if _, _, err := s.loadSegment(ctx, name, k); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("moved segment %s.%d: %v", name, k, err)
		}
	}
	// Untouched, everything still reads.
	if _, err := s.ReadChunk(ctx, e.ID, e.Location, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LoadManifest(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
}

func TestWrongPasswordWritesNothing(t *testing.T) {
	ctx := context.Background()
	be := newMemRepo()
	initEncrypted(t, be, crypt.XChaCha20Poly1305, "right")
	before := objects(be)
	s, err := Open(ctx, be)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Unlock(ctx, []byte("wrong"))
	if !errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), "none of its 1 key(s)") {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if s.Unlocked() {
		t.Fatal("unlocked with a wrong passphrase")
	}
	if _, err := s.AddKey(ctx, []byte("x"), cheapKDF); !errors.Is(err, ErrNeedKey) {
		t.Fatalf("AddKey while locked: %v", err)
	}
	if p := s.NewPacker(ctx, Compression{}, PackerOptions{Uploaders: 1}); true {
		if _, _, err := p.Add(ID{1}, []byte("data")); !errors.Is(err, ErrNeedKey) {
			t.Fatalf("Add while locked: %v", err)
		}
		p.Abort()
	}
	after := objects(be)
	if len(after) != len(before) {
		t.Fatalf("objects %d -> %d", len(before), len(after))
	}
	for k, v := range before {
		if !bytes.Equal(after[k], v) {
			t.Fatalf("%s changed", k)
		}
	}
}

func TestKeyedIDsDifferBetweenRepositories(t *testing.T) {
	a := initEncrypted(t, newMemRepo(), crypt.AES256GCM, "pw")
	b := initEncrypted(t, newMemRepo(), crypt.AES256GCM, "pw")
	data := []byte(strings.Repeat("same data in both ", 1000))
	if a.ChunkID(data) == b.ChunkID(data) {
		t.Fatal("same id in two repositories")
	}
	if a.ChunkID(data) == Sum(data) {
		t.Fatal("keyed id is the plain hash")
	}
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	be := newMemRepo()
	s := initEncrypted(t, be, crypt.AES256GCM, "one")
	first := s.KeyID()
	_, entries, _, _ := writeBackup(t, s)
	added, err := s.AddKey(ctx, []byte("two"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.Keys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	for _, k := range keys {
		if k.Current != (k.ID == first) {
			t.Fatalf("current flag wrong: %+v", k)
		}
	}
	if err := s.RemoveKey(ctx, first, false); err == nil || !strings.Contains(err.Error(), "unlocked") {
		t.Fatalf("removing the key in use: %v", err)
	}
	// Open with the second passphrase, change it, remove the first key.
	s2, _ := Open(ctx, be)
	if err := s2.Unlock(ctx, []byte("two")); err != nil || s2.KeyID() != added.ID {
		t.Fatalf("unlock with the added key: %v", err)
	}
	changed, err := s2.ChangePassword(ctx, []byte("three"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.RemoveKey(ctx, first, false); err != nil {
		t.Fatal(err)
	}
	if err := s2.RemoveKey(ctx, changed.ID, true); err == nil || !strings.Contains(err.Error(), "last key") {
		t.Fatalf("removing the last key: %v", err)
	}
	keys, _ = s2.Keys(ctx)
	if len(keys) != 1 || keys[0].ID != changed.ID {
		t.Fatalf("keys after: %+v", keys)
	}
	for _, pw := range []string{"one", "two"} {
		s3, _ := Open(ctx, be)
		if err := s3.Unlock(ctx, []byte(pw)); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("old passphrase %q: %v", pw, err)
		}
	}
	s3, _ := Open(ctx, be)
	if err := s3.Unlock(ctx, []byte("three")); err != nil {
		t.Fatal(err)
	}
	// The data was not rewritten and still reads.
	sort.Slice(entries, func(i, j int) bool { return entries[i].Offset < entries[j].Offset })
	for _, e := range entries {
		if _, err := s3.ReadChunk(ctx, e.ID, e.Location, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A damaged key object is listed with its problem and skipped.
	be.mu.Lock()
	be.objs[keyName("00000000-0000-0000-0000-000000000000")] = []byte("{")
	be.mu.Unlock()
	keys, _ = s3.Keys(ctx)
	if len(keys) != 2 || keys[0].Problem == "" {
		t.Fatalf("damaged key: %+v", keys)
	}
	s4, _ := Open(ctx, be)
	if err := s4.Unlock(ctx, []byte("three")); err != nil {
		t.Fatal(err)
	}
}

func FuzzOpenSealed(f *testing.F) {
	be := newMemRepo()
	var master [crypt.MasterSize]byte
	s := &Store{be: be, cfg: Config{ID: "7d0c3f7e-1b8e-4a4e-9a63-2f1f7d7b5a10", ChunkSize: 64 << 10, Encryption: crypt.AES256GCM, Version: FormatVersion, Hash: hashKeyed}}
	k, _ := crypt.NewKey(crypt.AES256GCM, master)
	s.key.Store(k)
	m := NewManifest(200<<10, 64<<10)
	g := m.NewSegment(0)
	g.Set(1, s.ChunkID([]byte("x")))
	seg, digest, _ := g.Encode()
	m.Segments = []SegmentRef{{Slot: 0, Unique: 1, Digest: digest}}
	data, _ := m.Encode()
	f.Add(uint8(0), s.sealObject(sealedManifestMagic, ManifestName("b"), data))
	f.Add(uint8(4), s.sealObject(sealedSegmentMagic, SegmentName("b", 0), seg))
	f.Add(uint8(1), s.sealObject(sealedRecordMagic, RecordName("b"), []byte(`{"format_version":1}`)))
	blob := EncodeBlob(nil, []byte("hello hello hello"), Compression{Level: 3})
	f.Add(uint8(2), s.sealBlob(nil, blob, s.ChunkID([]byte("hello hello hello"))))
	col := &collector{}
	p := s.NewPacker(context.Background(), Compression{Level: 1}, PackerOptions{Uploaders: 1, Commit: col.commit})
	p.Add(s.ChunkID([]byte("abc")), []byte("abc"))
	if err := p.Close(); err == nil && len(col.all()) > 0 {
		f.Add(uint8(3), objects(be)[packName(col.all()[0].Pack)])
	}
	f.Add(uint8(3), []byte("VBPACK02\x00\x00\x00\x00VBPKEND2"))
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		switch kind % 5 {
		case 0:
			if plain, err := s.openObject(sealedManifestMagic, ManifestName("b"), b); err == nil {
				DecodeManifest(plain)
			}
		case 1:
			if plain, err := s.openObject(sealedRecordMagic, RecordName("b"), b); err == nil {
				DecodeRecord(plain)
			}
		case 2:
			if plain, err := s.openBlob(append([]byte(nil), b...), s.ChunkID([]byte("hello hello hello"))); err == nil {
				DecodeBlob(plain, nil)
			}
		case 4:
			if plain, err := s.openObject(sealedSegmentMagic, SegmentName("b", 0), b); err == nil {
				DecodeSegment(plain)
			}
		case 3:
			entries, err := s.ParseSealedPack(b)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error does not wrap ErrCorrupt: %v", err)
				}
				return
			}
			for _, e := range entries {
				if err := s.checkLocation(e.Location); err != nil || int(e.Offset)+int(e.Length) > len(b) {
					t.Fatalf("entry out of bounds: %+v", e)
				}
			}
		}
	})
}
