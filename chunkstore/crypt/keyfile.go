package crypt

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// KDF is the argon2id cost of deriving a key-encryption key from a
// passphrase. A key file records the cost it was made with.
type KDF struct {
	Time      uint32 `json:"time"`       // passes
	MemoryKiB uint32 `json:"memory_kib"` // memory in KiB
	Threads   uint8  `json:"threads"`    // lanes
}

// DefaultKDF is RFC 9106's second recommended argon2id setting (3 passes
// over 64 MiB, 4 lanes): about 0.2 s on one core of the development
// machine, so a guess costs an attacker as much.
var DefaultKDF = KDF{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// Bounds a key file's cost must lie within: a hostile key file must not
// make an unlock allocate without limit or run for hours.
const (
	maxKDFTime   = 64
	maxKDFMemory = 1 << 20 // KiB: 1 GiB
	saltSize     = 32
)

func (p KDF) check() error {
	switch {
	case p.Time < 1 || p.Time > maxKDFTime:
		return fmt.Errorf("argon2id time %d outside 1..%d", p.Time, maxKDFTime)
	case p.Threads < 1:
		return fmt.Errorf("argon2id threads %d: at least 1", p.Threads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxKDFMemory:
		return fmt.Errorf("argon2id memory %d KiB outside %d..%d", p.MemoryKiB, 8*uint32(p.Threads), maxKDFMemory)
	}
	return nil
}

// KeyFile is one passphrase's copy of a repository's master secret, as
// stored in the repository (docs/FORMAT.md, "Key files"). It holds no
// secret in clear.
type KeyFile struct {
	Format       string    `json:"format"`  // "volback-key"
	Version      int       `json:"version"` // 1
	ID           string    `json:"id"`      // UUID; the object is keys/<id>
	RepositoryID string    `json:"repository_id"`
	CreatedAt    time.Time `json:"created_at"`
	KDFName      string    `json:"kdf"` // "argon2id"
	KDF
	Salt    []byte `json:"salt"`    // 32 bytes
	Wrapped []byte `json:"wrapped"` // XChaCha20-Poly1305 envelope of the master secret
}

const (
	keyFormat  = "volback-key"
	keyVersion = 1
	kdfName    = "argon2id"
	// wrappedSize is nonce, master secret and tag.
	wrappedSize = chacha20poly1305.NonceSizeX + MasterSize + TagSize
	// maxKeyFile bounds what DecodeKeyFile reads; a key file is ~400 bytes.
	maxKeyFile = 4 << 10
)

// ErrWrongPassword is returned (wrapped) when a passphrase opens no key.
var ErrWrongPassword = errors.New("wrong passphrase")

// keyAD binds a wrapped master secret to its repository and key id, so a
// key file copied to another repository or renamed does not open.
func keyAD(repoID, keyID string) []byte {
	return []byte("volback-key 1\x00" + repoID + "\x00" + keyID)
}

// kek derives the key-encryption key of a passphrase.
func kek(password []byte, salt []byte, p KDF) []byte {
	return argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, chacha20poly1305.KeySize)
}

// Wrap makes a new key file for repository repoID that opens master with
// password.
func Wrap(repoID string, master [MasterSize]byte, password []byte, p KDF) (*KeyFile, error) {
	if len(password) == 0 {
		return nil, errors.New("the passphrase is empty")
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	kf := &KeyFile{Format: keyFormat, Version: keyVersion, ID: uuid.NewString(), RepositoryID: repoID,
		CreatedAt: time.Now().UTC().Truncate(time.Second), KDFName: kdfName, KDF: p, Salt: make([]byte, saltSize)}
	if _, err := rand.Read(kf.Salt); err != nil {
		return nil, fmt.Errorf("reading random bytes for a salt: %v", err)
	}
	aead, _ := chacha20poly1305.NewX(kek(password, kf.Salt, p))
	nonce := make([]byte, aead.NonceSize(), wrappedSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("reading random bytes for a nonce: %v", err)
	}
	kf.Wrapped = aead.Seal(nonce, nonce, master[:], keyAD(repoID, kf.ID))
	return kf, nil
}

// Unwrap derives the key-encryption key from password and returns the
// master secret; a passphrase that is not this key's wraps
// ErrWrongPassword.
func (kf *KeyFile) Unwrap(password []byte) ([MasterSize]byte, error) {
	var m [MasterSize]byte
	aead, _ := chacha20poly1305.NewX(kek(password, kf.Salt, kf.KDF))
	ns := aead.NonceSize()
	out, err := aead.Open(m[:0], kf.Wrapped[:ns], kf.Wrapped[ns:], keyAD(kf.RepositoryID, kf.ID))
	if err != nil || len(out) != MasterSize {
		return [MasterSize]byte{}, fmt.Errorf("key %s: %w", kf.ID, ErrWrongPassword)
	}
	return m, nil
}

// Encode is the key file's JSON.
func (kf *KeyFile) Encode() []byte {
	b, _ := json.Marshal(kf) // plain fields only
	return append(b, '\n')
}

// DecodeKeyFile parses and checks a key file: strict JSON (unknown fields
// refused), known format and version, a UUID id for repository repoID,
// argon2id within bounds, a 32-byte salt and a wrapped secret of the
// right size. It does not need the passphrase.
func DecodeKeyFile(data []byte, repoID string) (*KeyFile, error) {
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("key file is %d bytes, more than a key file can be (%d)", len(data), maxKeyFile)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var kf KeyFile
	if err := dec.Decode(&kf); err != nil {
		return nil, fmt.Errorf("key file is not a volback key: %v", err)
	}
	if dec.More() {
		return nil, errors.New("key file has data after its JSON object")
	}
	switch {
	case kf.Format != keyFormat:
		return nil, fmt.Errorf("key file format is %q, want %q", kf.Format, keyFormat)
	case kf.Version != keyVersion:
		return nil, fmt.Errorf("key file version %d: this volback reads version %d (upgrade volback)", kf.Version, keyVersion)
	case len(kf.ID) != 36 || uuid.Validate(kf.ID) != nil:
		return nil, fmt.Errorf("key file id %q is not a UUID", kf.ID)
	case kf.RepositoryID != repoID:
		return nil, fmt.Errorf("key %s belongs to repository %q, not %s", kf.ID, kf.RepositoryID, repoID)
	case kf.KDFName != kdfName:
		return nil, fmt.Errorf("key %s: kdf %q unknown (want %s)", kf.ID, kf.KDFName, kdfName)
	case len(kf.Salt) != saltSize:
		return nil, fmt.Errorf("key %s: salt is %d bytes, want %d", kf.ID, len(kf.Salt), saltSize)
	case len(kf.Wrapped) != wrappedSize:
		return nil, fmt.Errorf("key %s: wrapped key is %d bytes, want %d", kf.ID, len(kf.Wrapped), wrappedSize)
	case kf.CreatedAt.Year() < 0 || kf.CreatedAt.Year() > 9999:
		return nil, fmt.Errorf("key %s: created_at year %d out of range", kf.ID, kf.CreatedAt.Year())
	}
	if err := kf.KDF.check(); err != nil {
		return nil, fmt.Errorf("key %s: %v", kf.ID, err)
	}
	return &kf, nil
}
