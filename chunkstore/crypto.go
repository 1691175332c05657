package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/volback/volback/chunkstore/crypt"
	"github.com/volback/volback/drivers/repo"
)

// Encryption (docs/FORMAT.md, "Encryption") touches the format in a few
// narrow places, all here: the chunk-id hash (ChunkID), blob sealing
// (sealBlob, openBlob), sealed objects (manifests, records, pack
// trailers: sealObject, openObject) and the key objects that wrap the
// master key. A version 1 store passes everything through unchanged.

// Errors of encrypted repositories, for errors.Is.
var (
	// ErrNeedKey: the repository is encrypted and this process has not
	// unlocked it.
	ErrNeedKey = errors.New("repository is encrypted and locked")
	// ErrWrongPassword: no key of the repository opens with the passphrase.
	ErrWrongPassword = crypt.ErrWrongPassword
)

const keysPrefix = "keys/"

func keyName(id string) string { return keysPrefix + id }

// Magic numbers of sealed objects; each is also the start of the
// associated data, so one kind of object cannot pass for another.
const (
	sealedManifestMagic = "VBMANIF2" // a whole manifest (v2) or a head (v3)
	sealedSegmentMagic  = "VBMSEGS3"
	sealedRecordMagic   = "VBRECRD2"
	blobAD              = "VBBLOB02"
	trailerAD           = "VBTRAIL2"
)

// crypto is the key state of a Store.
type crypto struct {
	key   atomic.Pointer[crypt.Key]
	keyID atomic.Pointer[string] // the key object that unlocked it
	mu    sync.Mutex             // one Unlock at a time
}

// Encrypted reports whether the repository is encrypted.
func (s *Store) Encrypted() bool { return s.cfg.Encryption != "" }

// Unlocked reports whether data can be read and written: always for an
// unencrypted repository, after Unlock for an encrypted one.
func (s *Store) Unlocked() bool { return !s.Encrypted() || s.key.Load() != nil }

// KeyID is the key object that unlocked the store ("" if none).
func (s *Store) KeyID() string {
	if p := s.keyID.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *Store) ready() error {
	if s.Unlocked() {
		return nil
	}
	return fmt.Errorf("%w: %s (%s) needs its passphrase: give it with --password-file FILE or VOLBACK_PASSWORD", ErrNeedKey, s.be.Location(), s.cfg.Encryption)
}

// Ready says why data cannot be read or written yet (nil when it can).
func (s *Store) Ready() error { return s.ready() }

// ChunkID names a chunk: BLAKE3-256 of its bytes (version 1), keyed
// BLAKE3-256 (version 2). The store must be unlocked.
func (s *Store) ChunkID(data []byte) ID {
	if k := s.key.Load(); k != nil {
		return k.ID(data)
	}
	if s.Encrypted() {
		panic("chunkstore: ChunkID on a locked encrypted repository") // callers check Ready first
	}
	return Sum(data)
}

// blobOverhead is what sealing adds to a blob: 0 unencrypted.
func (s *Store) blobOverhead() int {
	if !s.Encrypted() {
		return 0
	}
	return sealOverhead(s.cfg.Encryption)
}

// BlobOverhead is what sealing adds to each stored blob (0 unencrypted):
// readers size their buffers with it.
func (s *Store) BlobOverhead() int { return s.blobOverhead() }

func sealOverhead(cipherName string) int {
	if cipherName == crypt.AES256GCM {
		return 12 + crypt.TagSize
	}
	return 24 + crypt.TagSize
}

func chunkAD(id ID) []byte { return append([]byte(blobAD), id[:]...) }

// sealBlob appends the stored form of blob (chunk id) to dst: the blob
// itself, or its envelope.
func (s *Store) sealBlob(dst, blob []byte, id ID) []byte {
	k := s.key.Load()
	if k == nil {
		return append(dst, blob...)
	}
	return k.Seal(dst, blob, chunkAD(id))
}

// openBlob returns the blob in stored (read in place for a sealed one).
func (s *Store) openBlob(stored []byte, id ID) ([]byte, error) {
	k := s.key.Load()
	if k == nil {
		return stored, nil
	}
	b, err := k.OpenInPlace(stored, chunkAD(id))
	if err != nil {
		return nil, corruptf("sealed blob: %v", err)
	}
	return b, nil
}

// sealObject is the stored form of an object: data as it is (version 1),
// or magic | envelope with associated data magic | name.
func (s *Store) sealObject(magic, name string, data []byte) []byte {
	k := s.key.Load()
	if k == nil {
		return data
	}
	return k.Seal([]byte(magic), data, []byte(magic+name))
}

// openObject reverses sealObject; a damaged, altered or moved object
// wraps ErrCorrupt.
func (s *Store) openObject(magic, name string, stored []byte) ([]byte, error) {
	if !s.Encrypted() {
		return stored, nil
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	if len(stored) < len(magic) || string(stored[:len(magic)]) != magic {
		return nil, corruptf("sealed object does not start with %q", magic)
	}
	data, err := s.key.Load().Open(nil, stored[len(magic):], []byte(magic+name))
	if err != nil {
		return nil, corruptf("sealed object %s: %v", name, err)
	}
	return data, nil
}

// KDF is the argon2id cost new keys are made with; tests lower it.
var KDF = crypt.DefaultKDF

func kdfOr(p crypt.KDF) crypt.KDF {
	if p == (crypt.KDF{}) {
		return KDF
	}
	return p
}

// initKey makes the master key of a new encrypted repository and its
// first key object.
func (s *Store) initKey(ctx context.Context, opt InitOptions) error {
	master, err := crypt.NewMaster()
	if err != nil {
		return err
	}
	k, err := crypt.NewKey(s.cfg.Encryption, master)
	if err != nil {
		return err
	}
	kf, err := crypt.Wrap(s.cfg.ID, master, opt.Password, kdfOr(opt.KDF))
	if err != nil {
		return err
	}
	if err := s.be.Put(ctx, keyName(kf.ID), kf.Encode()); err != nil {
		return fmt.Errorf("writing key %s: %w", kf.ID, err)
	}
	s.key.Store(k)
	s.keyID.Store(&kf.ID)
	return nil
}

// KeyInfo describes one key object (never the secret).
type KeyInfo struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	KDF       string    `json:"kdf"` // "argon2id t=3 m=65536KiB p=4"
	Current   bool      `json:"current"`
	Problem   string    `json:"problem,omitempty"` // why it is not a valid key file
}

// keyFiles reads every key object of the repository; those that do not
// decode are returned in bad.
func (s *Store) keyFiles(ctx context.Context) (good []*crypt.KeyFile, bad map[string]error, err error) {
	bad = map[string]error{}
	var names []string
	if err := s.be.List(ctx, keysPrefix, func(i repo.Info) error { names = append(names, i.Name); return nil }); err != nil {
		return nil, nil, fmt.Errorf("listing the keys of %s: %w", s.be.Location(), err)
	}
	sort.Strings(names)
	for _, n := range names {
		id := strings.TrimPrefix(n, keysPrefix)
		data, err := s.be.Get(ctx, n)
		if errors.Is(err, repo.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading key %s of %s: %w", id, s.be.Location(), err)
		}
		kf, err := crypt.DecodeKeyFile(data, s.cfg.ID)
		if err == nil && kf.ID != id {
			err = fmt.Errorf("key object %s holds key %s", n, kf.ID)
		}
		if err != nil {
			bad[id] = err
			continue
		}
		good = append(good, kf)
	}
	return good, bad, nil
}

// Unlock finds the key object that password opens and keeps the master
// key in memory for the life of the store. It writes nothing. A
// passphrase no key opens is an error wrapping ErrWrongPassword; an
// unencrypted or already unlocked store is not an error (the passphrase
// is not checked again).
func (s *Store) Unlock(ctx context.Context, password []byte) error {
	if s.Unlocked() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Unlocked() {
		return nil
	}
	if len(password) == 0 {
		return s.ready()
	}
	kfs, bad, err := s.keyFiles(ctx)
	if err != nil {
		return err
	}
	for _, kf := range kfs {
		master, err := kf.Unwrap(password)
		if err != nil {
			continue
		}
		k, err := crypt.NewKey(s.cfg.Encryption, master)
		if err != nil {
			return err
		}
		s.keyID.Store(&kf.ID)
		s.key.Store(k)
		return nil
	}
	why := ""
	if len(bad) > 0 {
		why = fmt.Sprintf(" (%d damaged key object(s) skipped)", len(bad))
	}
	if len(kfs) == 0 {
		return fmt.Errorf("repository %s is encrypted but holds no readable key%s: it cannot be unlocked", s.be.Location(), why)
	}
	return fmt.Errorf("%w for repository %s: none of its %d key(s) opens with it%s; check --password-file or VOLBACK_PASSWORD",
		ErrWrongPassword, s.be.Location(), len(kfs), why)
}

// Keys lists the key objects.
func (s *Store) Keys(ctx context.Context) ([]KeyInfo, error) {
	kfs, bad, err := s.keyFiles(ctx)
	if err != nil {
		return nil, err
	}
	out := []KeyInfo{}
	for _, kf := range kfs {
		out = append(out, KeyInfo{ID: kf.ID, CreatedAt: kf.CreatedAt, Current: kf.ID == s.KeyID(),
			KDF: fmt.Sprintf("%s t=%d m=%dKiB p=%d", kf.KDFName, kf.Time, kf.MemoryKiB, kf.Threads)})
	}
	for id, err := range bad {
		out = append(out, KeyInfo{ID: id, Problem: err.Error()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// AddKey wraps the master key under another passphrase in a new key
// object. Nothing else is rewritten. The store must be unlocked.
func (s *Store) AddKey(ctx context.Context, password []byte, p crypt.KDF) (KeyInfo, error) {
	if !s.Encrypted() {
		return KeyInfo{}, fmt.Errorf("repository %s is not encrypted: it has no keys", s.be.Location())
	}
	if err := s.ready(); err != nil {
		return KeyInfo{}, err
	}
	kf, err := crypt.Wrap(s.cfg.ID, s.key.Load().Master(), password, kdfOr(p))
	if err != nil {
		return KeyInfo{}, err
	}
	if err := s.be.Put(ctx, keyName(kf.ID), kf.Encode()); err != nil {
		return KeyInfo{}, fmt.Errorf("writing key %s to %s: %w", kf.ID, s.be.Location(), err)
	}
	return KeyInfo{ID: kf.ID, CreatedAt: kf.CreatedAt, KDF: fmt.Sprintf("%s t=%d m=%dKiB p=%d", kf.KDFName, kf.Time, kf.MemoryKiB, kf.Threads)}, nil
}

// RemoveKey deletes key object id. It refuses the last valid key (the
// data would be lost for good) and, unless other is set, the key this
// store was unlocked with.
func (s *Store) RemoveKey(ctx context.Context, id string, allowCurrent bool) error {
	if err := s.ready(); err != nil {
		return err
	}
	kfs, bad, err := s.keyFiles(ctx)
	if err != nil {
		return err
	}
	found := bad[id] != nil
	for _, kf := range kfs {
		found = found || kf.ID == id
	}
	switch {
	case !found:
		return fmt.Errorf("repository %s has no key %s; repo-key list shows its keys", s.be.Location(), id)
	case bad[id] == nil && len(kfs) == 1:
		return fmt.Errorf("key %s is the last key of repository %s: without it nothing in the repository can ever be read; add another key first", id, s.be.Location())
	case id == s.KeyID() && !allowCurrent:
		return fmt.Errorf("key %s is the key this volback unlocked repository %s with; unlock with another key's passphrase to remove it, or use repo-key passwd", id, s.be.Location())
	}
	if err := s.be.Delete(ctx, keyName(id)); err != nil && !errors.Is(err, repo.ErrNotFound) {
		return fmt.Errorf("deleting key %s of %s: %w", id, s.be.Location(), err)
	}
	return nil
}

// ChangePassword replaces the key this store was unlocked with by a new
// one for password: the new key object is written first, then the old one
// removed, so the master key is never without a key object.
func (s *Store) ChangePassword(ctx context.Context, password []byte, p crypt.KDF) (KeyInfo, error) {
	old := s.KeyID()
	ki, err := s.AddKey(ctx, password, p)
	if err != nil {
		return ki, err
	}
	s.keyID.Store(&ki.ID)
	ki.Current = true
	if old != "" {
		if err := s.RemoveKey(ctx, old, true); err != nil {
			return ki, fmt.Errorf("the new key %s is written, but removing the old key %s failed: %w; remove it with repo-key remove %s", ki.ID, old, err, old)
		}
	}
	return ki, nil
}
