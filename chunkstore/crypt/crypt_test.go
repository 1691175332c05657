package crypt

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/uuid"
)

// testKDF is cheap: the tests derive many keys.
var testKDF = KDF{Time: 1, MemoryKiB: 64, Threads: 1}

func testKey(t testing.TB, cipherName string) *Key {
	t.Helper()
	m, err := NewMaster()
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKey(cipherName, m)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	for _, c := range Ciphers {
		t.Run(c, func(t *testing.T) {
			k := testKey(t, c)
			msg := []byte("volume db, 10 GiB, the secret marker")
			sealed := k.Seal([]byte("prefix"), msg, []byte("ad"))
			if !bytes.HasPrefix(sealed, []byte("prefix")) || len(sealed) != 6+len(msg)+k.Overhead() {
				t.Fatalf("sealed is %d bytes", len(sealed))
			}
			if bytes.Contains(sealed, []byte("secret")) {
				t.Fatal("plaintext visible in the envelope")
			}
			env := sealed[6:]
			got, err := k.Open(nil, env, []byte("ad"))
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("open: %q %v", got, err)
			}
			// In place.
			cp := append([]byte(nil), env...)
			if got, err := k.OpenInPlace(cp, []byte("ad")); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("open in place: %q %v", got, err)
			}
			// Every flipped byte, another ad, another key, a short envelope: refused.
			for i := range env {
				bad := append([]byte(nil), env...)
				bad[i] ^= 0x01
				if _, err := k.Open(nil, bad, []byte("ad")); !errors.Is(err, ErrAuth) {
					t.Fatalf("flipped byte %d: %v", i, err)
				}
			}
			if _, err := k.Open(nil, env, []byte("other")); !errors.Is(err, ErrAuth) {
				t.Fatalf("other ad: %v", err)
			}
			if _, err := testKey(t, c).Open(nil, env, []byte("ad")); !errors.Is(err, ErrAuth) {
				t.Fatalf("other key: %v", err)
			}
			if _, err := k.Open(nil, env[:k.Overhead()-1], []byte("ad")); !errors.Is(err, ErrAuth) {
				t.Fatalf("short: %v", err)
			}
			// Two seals of one message differ (random nonces).
			if bytes.Equal(k.Seal(nil, msg, nil), k.Seal(nil, msg, nil)) {
				t.Fatal("two seals are equal")
			}
		})
	}
}

func TestKeyedIDs(t *testing.T) {
	a, b := testKey(t, AES256GCM), testKey(t, AES256GCM)
	data := bytes.Repeat([]byte("chunk"), 1000)
	if id1, id2 := a.ID(data), a.ID(data); id1 != id2 {
		t.Fatal("keyed id not deterministic")
	}
	if a.ID(data) == b.ID(data) {
		t.Fatal("two repositories give the same keyed id")
	}
	// Same master, same ids whatever the cipher: the id key is derived
	// from the master only.
	c, _ := NewKey(XChaCha20Poly1305, a.Master())
	if c.ID(data) != a.ID(data) {
		t.Fatal("id depends on the cipher")
	}
}

func TestWrapUnwrap(t *testing.T) {
	repo := uuid.NewString()
	m, _ := NewMaster()
	kf, err := Wrap(repo, m, []byte("correct horse"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	data := kf.Encode()
	if bytes.Contains(data, m[:]) {
		t.Fatal("master in clear")
	}
	back, err := DecodeKeyFile(data, repo)
	if err != nil {
		t.Fatal(err)
	}
	got, err := back.Unwrap([]byte("correct horse"))
	if err != nil || got != m {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := back.Unwrap([]byte("wrong horse")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := DecodeKeyFile(data, uuid.NewString()); err == nil {
		t.Fatal("key of another repository accepted")
	}
	// A key file renamed (another id) does not open: the id is bound.
	back.ID = uuid.NewString()
	if _, err := back.Unwrap([]byte("correct horse")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("renamed key: %v", err)
	}
	if _, err := Wrap(repo, m, nil, testKDF); err == nil {
		t.Fatal("empty passphrase accepted")
	}
}

func TestParseCipher(t *testing.T) {
	for in, want := range map[string]string{"aes-256-gcm": AES256GCM, "chacha20-poly1305": XChaCha20Poly1305, "xchacha20-poly1305": XChaCha20Poly1305} {
		if got, err := ParseCipher(in); err != nil || got != want {
			t.Fatalf("%s: %s %v", in, got, err)
		}
	}
	if _, err := ParseCipher("rot13"); err == nil {
		t.Fatal("rot13 accepted")
	}
}

func FuzzDecodeKeyFile(f *testing.F) {
	repo := "6f1c4a52-9c1e-4a0e-8d6b-7a2f1c3e5d90"
	m := [MasterSize]byte{1, 2, 3}
	kf, _ := Wrap(repo, m, []byte("pw"), testKDF)
	f.Add(kf.Encode())
	f.Add([]byte(`{"format":"volback-key","version":1}`))
	f.Add([]byte(`{"format":"volback-key","version":1,"id":"6f1c4a52-9c1e-4a0e-8d6b-7a2f1c3e5d90","repository_id":"6f1c4a52-9c1e-4a0e-8d6b-7a2f1c3e5d90","kdf":"argon2id","time":1,"memory_kib":4294967295,"threads":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := DecodeKeyFile(data, repo)
		if err != nil {
			return
		}
		// Whatever decodes has bounded cost and the right sizes, and
		// unwrapping it never panics.
		if kf.MemoryKiB > maxKDFMemory || kf.Time > maxKDFTime || len(kf.Salt) != saltSize || len(kf.Wrapped) != wrappedSize {
			t.Fatalf("out of bounds: %+v", kf)
		}
		if kf.MemoryKiB <= 1<<10 && kf.Time <= 4 {
			kf.Unwrap([]byte("pw"))
		}
		if _, err := DecodeKeyFile(kf.Encode(), repo); err != nil {
			t.Fatalf("re-encoded key file refused: %v", err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	var m [MasterSize]byte
	for _, c := range Ciphers {
		k, _ := NewKey(c, m)
		f.Add(c == AES256GCM, k.Seal(nil, []byte("hello"), []byte("ad")))
	}
	f.Add(true, []byte{})
	f.Fuzz(func(t *testing.T, aes bool, sealed []byte) {
		c := XChaCha20Poly1305
		if aes {
			c = AES256GCM
		}
		k, _ := NewKey(c, m)
		out, err := k.Open(nil, sealed, []byte("ad"))
		if err != nil {
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("error does not wrap ErrAuth: %v", err)
			}
			return
		}
		if len(out) != len(sealed)-k.Overhead() {
			t.Fatalf("opened %d bytes from %d", len(out), len(sealed))
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	data := bytes.Repeat([]byte{7}, 64<<10)
	for _, c := range Ciphers {
		b.Run(c, func(b *testing.B) {
			k := testKey(b, c)
			buf := make([]byte, 0, len(data)+64)
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				buf = k.Seal(buf[:0], data, nil)
			}
		})
		b.Run(c+"/open", func(b *testing.B) {
			k := testKey(b, c)
			sealed := k.Seal(nil, data, nil)
			buf := make([]byte, 0, len(data))
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := k.Open(buf[:0], sealed, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("keyed-blake3", func(b *testing.B) {
		k := testKey(b, AES256GCM)
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			k.ID(data)
		}
	})
}

func BenchmarkDefaultKDF(b *testing.B) {
	salt := make([]byte, saltSize)
	for b.Loop() {
		kek([]byte("passphrase"), salt, DefaultKDF)
	}
}
