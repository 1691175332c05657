// Package crypt holds the cryptography of encrypted repositories
// (docs/FORMAT.md, "Encryption"): a repository's master key and the keys
// derived from it, the authenticated envelope every encrypted object and
// blob is sealed in, the keyed hash that names chunks, and the key files
// that wrap the master key under a passphrase. It knows nothing of object
// names or layouts: chunkstore says what is sealed and with which
// associated data.
package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// Ciphers a repository may be created with.
const (
	AES256GCM         = "aes-256-gcm"
	XChaCha20Poly1305 = "xchacha20-poly1305"
)

// Ciphers lists the cipher names, the default first.
var Ciphers = []string{AES256GCM, XChaCha20Poly1305}

// ParseCipher maps what a user may type to a cipher name: the names
// themselves, and "chacha20-poly1305" for the extended-nonce construction
// volback uses (random 24-byte nonces never repeat in practice, where
// 12-byte ones need counting).
func ParseCipher(s string) (string, error) {
	switch s {
	case AES256GCM:
		return AES256GCM, nil
	case XChaCha20Poly1305, "chacha20-poly1305":
		return XChaCha20Poly1305, nil
	}
	return "", fmt.Errorf("unknown encryption %q: use %s, chacha20-poly1305 (%s) or none", s, AES256GCM, XChaCha20Poly1305)
}

// MasterSize is the size of a repository's master secret.
const MasterSize = 32

// TagSize is the authentication tag of both ciphers.
const TagSize = 16

// ErrAuth is returned (wrapped) when sealed bytes do not authenticate:
// they were damaged or altered, or sealed under another key.
var ErrAuth = errors.New("message authentication failed")

// Key is an unlocked repository key: the AEAD that seals data and the key
// of the chunk-id hash, both derived from the master secret. It lives in
// memory only. Safe for concurrent use.
type Key struct {
	cipher string
	master [MasterSize]byte
	aead   cipher.AEAD
	idKey  [32]byte
	hashes sync.Pool // of *blake3.Hasher keyed with idKey
}

// Contexts of the BLAKE3 key derivations: one subkey per purpose, so the
// data key never doubles as the hash key.
const (
	dataKeyContext = "volback 2026-11 repository data encryption key"
	idKeyContext   = "volback 2026-11 repository chunk id key"
)

// NewMaster returns a fresh random master secret.
func NewMaster() ([MasterSize]byte, error) {
	var m [MasterSize]byte
	if _, err := rand.Read(m[:]); err != nil {
		return m, fmt.Errorf("reading random bytes for a master key: %v", err)
	}
	return m, nil
}

// NewKey derives the working keys of a repository that uses cipherName
// from its master secret.
func NewKey(cipherName string, master [MasterSize]byte) (*Key, error) {
	k := &Key{cipher: cipherName, master: master}
	var dk [32]byte
	blake3.DeriveKey(dataKeyContext, master[:], dk[:])
	blake3.DeriveKey(idKeyContext, master[:], k.idKey[:])
	var err error
	switch cipherName {
	case AES256GCM:
		var b cipher.Block
		if b, err = aes.NewCipher(dk[:]); err == nil {
			k.aead, err = cipher.NewGCM(b)
		}
	case XChaCha20Poly1305:
		k.aead, err = chacha20poly1305.NewX(dk[:])
	default:
		return nil, fmt.Errorf("unknown cipher %q (this volback knows %v)", cipherName, Ciphers)
	}
	if err != nil {
		return nil, fmt.Errorf("cipher %s: %v", cipherName, err)
	}
	k.hashes.New = func() any {
		h, _ := blake3.NewKeyed(k.idKey[:]) // a 32-byte key never fails
		return h
	}
	return k, nil
}

// Cipher is the cipher's name.
func (k *Key) Cipher() string { return k.cipher }

// Master is the master secret, for wrapping it under another passphrase.
func (k *Key) Master() [MasterSize]byte { return k.master }

// Overhead is what sealing adds: nonce and tag.
func (k *Key) Overhead() int { return k.aead.NonceSize() + k.aead.Overhead() }

// Seal appends the envelope of plaintext to dst: a random nonce, then the
// ciphertext and tag over plaintext and the associated data ad (which is
// authenticated, not stored). plaintext and dst must not overlap.
func (k *Key) Seal(dst, plaintext, ad []byte) []byte {
	ns := k.aead.NonceSize()
	start := len(dst)
	dst = growTo(dst, start+ns)
	if _, err := rand.Read(dst[start : start+ns]); err != nil {
		panic(fmt.Sprintf("crypt: reading a random nonce: %v", err)) // the kernel's CSPRNG does not fail
	}
	return k.aead.Seal(dst, dst[start:start+ns], plaintext, ad)
}

// Open authenticates and decrypts an envelope made by Seal with the same
// ad and appends the plaintext to dst, which must not overlap sealed (see
// OpenInPlace). A short, damaged, altered or foreign envelope wraps ErrAuth.
func (k *Key) Open(dst, sealed, ad []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < ns+k.aead.Overhead() {
		return nil, fmt.Errorf("%w: %d sealed bytes are fewer than nonce and tag (%d)", ErrAuth, len(sealed), ns+k.aead.Overhead())
	}
	out, err := k.aead.Open(dst, sealed[:ns], sealed[ns:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", ErrAuth, k.cipher)
	}
	return out, nil
}

// OpenInPlace is Open decrypting within sealed: the plaintext it returns
// lies in sealed's memory, after the nonce.
func (k *Key) OpenInPlace(sealed, ad []byte) ([]byte, error) {
	ns := min(k.aead.NonceSize(), len(sealed))
	return k.Open(sealed[ns:ns], sealed, ad)
}

// ID is the keyed BLAKE3-256 of data: a chunk's id in an encrypted
// repository. Without the key nobody can compute it, so ids neither
// confirm that a repository holds known data nor match between
// repositories.
func (k *Key) ID(data []byte) (id [32]byte) {
	h := k.hashes.Get().(*blake3.Hasher)
	h.Reset()
	h.Write(data)
	h.Sum(id[:0])
	k.hashes.Put(h)
	return id
}

func growTo(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]byte, n, n+n/4+64)
	copy(nb, b)
	return nb
}
