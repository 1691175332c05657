package chunkstore

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testRecord() *Record {
	return &Record{
		FormatVersion: 1, ID: "7d0c3f7e-1b8e-4a4e-9a63-2f1f7d7b5a10", Name: "nightly",
		VolumeID: "vol-1", VolumeSizeBytes: 1 << 28, SizeBytes: 1 << 28, ObjectCount: 812,
		StoredBytes: 1234567, AvailabilityZone: "nova", Container: "file:///srv/repo",
		CreatedAt: time.Date(2026, 11, 25, 20, 41, 0, 0, time.UTC), DataTimestamp: time.Date(2026, 11, 25, 20, 40, 0, 0, time.UTC),
		RepositoryID: "0b0a7c5e-34c8-4d6f-a1a0-0d6b3f7b4d11", ChunkSize: 64 << 10,
		ManifestDigest: Sum([]byte("m")).String(),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := testRecord()
	b := EncodeRecord(r)
	if !strings.Contains(string(b), `"manifest_digest":"`+r.ManifestDigest+`"`) || !strings.Contains(string(b), `"format_version":1`) {
		t.Fatalf("record JSON %s", b)
	}
	got, err := DecodeRecord(b)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, got, r)
	}
	if d, err := got.Digest(); err != nil || d != Sum([]byte("m")) {
		t.Fatal("Digest")
	}
}

func TestDecodeRecordRefuses(t *testing.T) {
	cases := map[string]func(*Record){
		"version 0":      func(r *Record) { r.FormatVersion = 0 },
		"id":             func(r *Record) { r.ID = "backup-1" },
		"size":           func(r *Record) { r.SizeBytes = -1 },
		"volume size":    func(r *Record) { r.VolumeSizeBytes = -5 },
		"stored":         func(r *Record) { r.StoredBytes = -1 },
		"objects":        func(r *Record) { r.ObjectCount = -1 },
		"chunk size":     func(r *Record) { r.ChunkSize = 65535 },
		"digest short":   func(r *Record) { r.ManifestDigest = "abcd" },
		"digest upper":   func(r *Record) { r.ManifestDigest = strings.ToUpper(r.ManifestDigest) },
		"digest not hex": func(r *Record) { r.ManifestDigest = strings.Repeat("z", 64) },
	}
	for name, f := range cases {
		r := testRecord()
		f(r)
		if _, err := DecodeRecord(EncodeRecord(r)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	r := testRecord()
	r.FormatVersion = FormatVersion + 1
	if _, err := DecodeRecord(EncodeRecord(r)); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "upgrade volback") {
		t.Errorf("version %d: %v", r.FormatVersion, err)
	}
	r.FormatVersion = 1 // a record of a format-1 repository
	if _, err := DecodeRecord(EncodeRecord(r)); err != nil {
		t.Errorf("version 1: %v", err)
	}
	for _, b := range []string{"", "{", "[]", `{"format_version":"1"}`} {
		if _, err := DecodeRecord([]byte(b)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: %v", b, err)
		}
	}
}
