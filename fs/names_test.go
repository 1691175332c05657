package fs

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"vol-a":        "vol-a",
		"a/b/c":        "a_b_c",
		"nul\x00byte":  "nul_byte",
		"":             "_",
		".":            "_",
		"..":           "__",
		"...":          "...",
		"ünïcødé name": "ünïcødé name",
	} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
	long := strings.Repeat("é", 150) // 300 bytes
	got := sanitizeName(long)
	if len(got) > maxNameBytes || !utf8.ValidString(got) || !strings.HasPrefix(long, got) {
		t.Errorf("long name cut to %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}

func TestListingStableNames(t *testing.T) {
	old := Entry{ID: "bbbbbbbb-1", Name: "n", VolumeName: "v", CreatedAt: t1}
	l := newListing([]Entry{old})
	if _, ok := l.volumes["v"].files["2026-01-02T03-04-05Z_n.img"]; !ok {
		t.Fatalf("got %q", l.volumes["v"].names)
	}
	// A later backup with the same name and second gets the suffix; the
	// existing file keeps its name. Equal times: the lower id keeps it.
	later := Entry{ID: "aaaaaaaa-2", Name: "n", VolumeName: "v", CreatedAt: t1.Add(time.Millisecond)}
	l = newListing([]Entry{later, old})
	if e := l.volumes["v"].files["2026-01-02T03-04-05Z_n.img"]; e == nil || e.ID != old.ID {
		t.Fatalf("plain name went to %+v", e)
	}
	if e := l.volumes["v"].files["2026-01-02T03-04-05Z_n_aaaaaaaa.img"]; e == nil || e.ID != later.ID {
		t.Fatalf("suffixed name went to %+v; names %q", e, l.volumes["v"].names)
	}
	// Same 8-char prefix too: the full id disambiguates.
	third := Entry{ID: "aaaaaaaa-3", Name: "n", VolumeName: "v", CreatedAt: t1.Add(2 * time.Millisecond)}
	l = newListing([]Entry{third, later, old})
	if e := l.volumes["v"].files["2026-01-02T03-04-05Z_n_aaaaaaaa-3.img"]; e == nil || e.ID != third.ID {
		t.Fatalf("names %q", l.volumes["v"].names)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestListingSameVolumeName: two volumes named alike get two directories,
// the plain name for the one with the oldest backup and name-<id prefix>
// for the other, and keep them as more backups come.
func TestListingSameVolumeName(t *testing.T) {
	a1 := Entry{ID: "b1", VolumeID: "aaaaaaaa-1111", VolumeName: "db", CreatedAt: t1}
	b1 := Entry{ID: "b2", VolumeID: "bbbbbbbb-2222", VolumeName: "db", CreatedAt: t1.Add(time.Second)}
	a2 := Entry{ID: "b3", VolumeID: "aaaaaaaa-1111", VolumeName: "db", CreatedAt: t1.Add(2 * time.Second)}
	lit := Entry{ID: "b4", VolumeID: "cccccccc-3333", VolumeName: "db-bbbbbbbb", CreatedAt: t1.Add(3 * time.Second)}
	l := newListing([]Entry{lit, a2, b1, a1})
	if got := strings.Join(l.volNames, " "); got != "db db-bbbbbbbb db-bbbbbbbb-cccccccc" {
		t.Fatalf("by-volume = %q", got)
	}
	for dir, ids := range map[string]string{"db": "b1 b3", "db-bbbbbbbb": "b2", "db-bbbbbbbb-cccccccc": "b4"} {
		var got []string
		for _, n := range l.volumes[dir].names {
			got = append(got, l.volumes[dir].files[n].ID)
		}
		if strings.Join(got, " ") != ids {
			t.Errorf("%s holds %v, want %s", dir, got, ids)
		}
	}
}

func TestMountinfoUnescape(t *testing.T) {
	info := "36 35 98:0 / /mnt/with\\040space rw - ext4 /dev/x rw\n" +
		"37 35 0:50 / /tmp/m rw - fuse.volback volback ro\n"
	for path, want := range map[string]bool{"/mnt/with space": true, "/tmp/m": true, "/tmp": false, "/mnt/with\\040space": false} {
		got, err := mountinfoHas(strings.NewReader(info), path)
		if err != nil || got != want {
			t.Errorf("mountinfoHas(%q) = %v, %v; want %v", path, got, err, want)
		}
	}
	for path, want := range map[string]mountEntry{"/mnt/with space": {"ext4", "/dev/x"}, "/tmp/m": {"fuse.volback", "volback"}} {
		m, _, _ := findMount(strings.NewReader(info), path)
		if m != want {
			t.Errorf("findMount(%q) = %+v, want %+v", path, m, want)
		}
	}
	if got := unescapeMountinfo(`a\134b\0`); got != `a\b\0` {
		t.Errorf("unescape = %q", got)
	}
}

// FuzzListing: backup names, volume names and ids are user input; every name
// the mount shows must be one valid, unique path component.
func FuzzListing(f *testing.F) {
	f.Add("id-1", "name", "vol", "id-2", "name", "vol")
	f.Add("a/b", "", "..", "a_b", "", ".")
	f.Add("\x00", "x/y", "", "_", "x_y", "/")
	f.Add(strings.Repeat("i", 300), strings.Repeat("ñ", 200), strings.Repeat("v", 256), "i", "ñ", "v")
	f.Fuzz(func(t *testing.T, id1, name1, vol1, id2, name2, vol2 string) {
		es := []Entry{
			{ID: id1, Name: name1, VolumeID: vol1 + "|" + name1, VolumeName: vol1, CreatedAt: t1},
			{ID: id2, Name: name2, VolumeID: vol2 + "|" + name2, VolumeName: vol2, CreatedAt: t1},
		}
		l := newListing(es)
		valid := func(n string) {
			if n == "" || n == "." || n == ".." || len(n) > maxNameLength || strings.ContainsAny(n, "/\x00") {
				t.Fatalf("invalid path component %q", n)
			}
		}
		for _, n := range l.idNames {
			valid(n)
		}
		files := 0
		for _, v := range l.volNames {
			valid(v)
			d := l.volumes[v]
			if len(d.names) != len(d.files) {
				t.Fatalf("duplicate names in %q: %q", v, d.names)
			}
			for _, n := range d.names {
				valid(n)
			}
			files += len(d.names)
		}
		if id1 != id2 && files != 2 {
			t.Fatalf("two backups, %d by-volume files", files)
		}
		if vols := 1 + btoi(es[0].VolumeID != es[1].VolumeID); len(l.volNames) != vols || len(l.volumes) != vols {
			t.Fatalf("%d volume ids, by-volume has %q", vols, l.volNames)
		}
	})
}
