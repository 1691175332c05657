package index

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/volback/volback/chunkstore"
)

func TestRepoStateAndZones(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir)
	c.View(func(tx *Tx) error {
		if _, found, err := tx.RepoState(testRepo); found || err != nil {
			t.Errorf("RepoState of a new catalog: found %v, %v", found, err)
		}
		if _, found, err := tx.Zone("nova"); found || err != nil {
			t.Errorf("Zone of a new catalog: found %v, %v", found, err)
		}
		return nil
	})
	st := RepoState{ID: testRepo, URL: "file:///srv/r", GCGeneration: "g1"}
	z := ZoneBinding{Zone: "nova", RepositoryID: testRepo, URL: "file:///srv/r"}
	if err := c.Update(func(tx *Tx) error {
		if err := tx.PutRepoState(st); err != nil {
			return err
		}
		return tx.PutZone(z)
	}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = openT(t, dir)
	c.View(func(tx *Tx) error {
		if got, found, err := tx.RepoState(testRepo); !found || err != nil || got != st {
			t.Errorf("RepoState after reopen: %+v %v %v", got, found, err)
		}
		if got, found, err := tx.Zone("nova"); !found || err != nil || got != z {
			t.Errorf("Zone after reopen: %+v %v %v", got, found, err)
		}
		return nil
	})
	if err := c.Update(func(tx *Tx) error { return tx.PutZone(ZoneBinding{Zone: "a/b"}) }); err == nil {
		t.Error("a zone name with '/' was accepted")
	}
}

func TestBackupPacks(t *testing.T) {
	c := openT(t, t.TempDir())
	packs := []chunkstore.ID{chunkID(1), chunkID(2), {'/', '/'}} // raw bytes may hold '/'
	err := c.Update(func(tx *Tx) error {
		for _, p := range packs {
			if err := tx.AddBackupPack("b1", p); err != nil {
				return err
			}
		}
		return tx.AddBackupPack("b10", chunkID(3))
	})
	if err != nil {
		t.Fatal(err)
	}
	list := func(id string) (got []string) {
		c.View(func(tx *Tx) error {
			return tx.BackupPacks(id, func(b string, p chunkstore.ID) error {
				got = append(got, b+":"+p.String()[:4])
				return nil
			})
		})
		slices.Sort(got)
		return got
	}
	want := []string{"b1:" + packs[0].String()[:4], "b1:" + packs[1].String()[:4], "b1:2f2f"}
	slices.Sort(want)
	if got := list("b1"); !slices.Equal(got, want) {
		t.Errorf("packs of b1: %v, want %v (b10's must not show)", got, want)
	}
	if got := list(""); len(got) != 4 {
		t.Errorf("all recorded packs: %v", got)
	}
	c.Update(func(tx *Tx) error { return tx.DeleteBackupPack("b1", packs[2]) })
	if got := list("b1"); len(got) != 2 {
		t.Errorf("after deleting one: %v", got)
	}
}

func TestLostChunk(t *testing.T) {
	c := testChunk(500)
	if c.Lost() {
		t.Fatal("a located chunk reports lost")
	}
	refs := c.Refs
	c.MarkLost()
	if !c.Lost() || c.Refs != refs {
		t.Fatalf("MarkLost: lost %v refs %d, want true %d", c.Lost(), c.Refs, refs)
	}
	got, err := decodeChunk(encodeChunk(c))
	if err != nil || !got.Lost() || got.Refs != refs {
		t.Fatalf("a lost entry does not survive encoding: %+v %v", got, err)
	}
}

// TestOpenAfterKillDuringOpen: a process killed while Badger creates a
// value log or memtable file leaves it empty; the next open must work.
func TestOpenAfterKillDuringOpen(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir)
	if err := c.Update(func(tx *Tx) error { return tx.PutVolume(&Volume{ID: "v1", Name: "x"}) }); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, name := range []string{"000099.vlog", "00099.mem"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("open after a kill during open: %v", err)
	}
	defer c.Close()
	if err := c.View(func(tx *Tx) error { _, err := tx.Volume("v1"); return err }); err != nil {
		t.Fatalf("data after reopening: %v", err)
	}
}
