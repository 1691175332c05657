package rados

import (
	"bytes"
	"testing"
	"time"
)

func TestCodecRoundTrip(t *testing.T) {
	now := time.Unix(0, time.Now().UnixNano())
	for _, m := range []meta{
		{size: 0, modTime: now, nonce: 1},
		{size: 100, modTime: now, nonce: 2},
		{size: 8<<20 + 1, modTime: now, nonce: 3, parts: 9, partSize: 1 << 20},
	} {
		got, err := decodeMeta(m.encode())
		if err != nil || got != m {
			t.Fatalf("meta %+v decodes as %+v, %v", m, got, err)
		}
	}
	e := entry{pending: true, size: 5, modTime: now, nonce: 7, parts: 2, oldNonce: 9, oldParts: 3}
	if got, err := decodeEntry(e.encode()); err != nil || got != e {
		t.Fatalf("entry %+v decodes as %+v, %v", e, got, err)
	}
	bad := meta{size: 10, nonce: 1, parts: 2, partSize: 100}.encode()
	if _, err := decodeMeta(bad); err == nil {
		t.Fatal("meta whose parts cannot hold its size was accepted")
	}
}

// FuzzMeta: arbitrary bytes from the cluster never panic the decoder, and
// what it accepts has a usable layout and encodes back to the same bytes.
func FuzzMeta(f *testing.F) {
	f.Add(meta{size: 3, nonce: 1}.encode())
	f.Add(meta{size: 5 << 20, nonce: 2, parts: 5, partSize: 1 << 20}.encode())
	f.Add([]byte{})
	f.Add([]byte{metaVersion, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if m.parts > 0 && int64(m.parts)*int64(m.partSize) < m.size {
			t.Fatalf("accepted %+v: parts cannot hold the size", m)
		}
		if !bytes.Equal(m.encode(), b) {
			t.Fatalf("%x decodes to %+v, which encodes as %x", b, m, m.encode())
		}
	})
}

func FuzzEntry(f *testing.F) {
	f.Add(entry{size: 3, modTime: time.Unix(1, 2)}.encode())
	f.Add(entry{pending: true, nonce: 4, parts: 2, oldNonce: 5, oldParts: 1}.encode())
	f.Add([]byte{entryVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			return
		}
		if e.size < 0 || !bytes.Equal(e.encode(), b) {
			t.Fatalf("%x decodes to %+v, which encodes as %x", b, e, e.encode())
		}
	})
}
