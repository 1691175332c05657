package repotest

import (
	"bytes"
	"testing"

	"github.com/volback/volback/drivers/repo"
)

// RunShared checks that two clients of one repository (two connections,
// as two hosts sharing it) see each other's writes, overwrites and
// deletes at once. open returns both clients of one fresh repository.
func RunShared(t *testing.T, open func(t *testing.T) (a, b repo.Backend)) {
	a, b := open(t)
	defer a.Close()
	defer b.Close()
	pack := PackName(t, "")
	data := Random(t, 3<<20)
	put(t, a, pack, data)
	put(t, a, "backups/x", []byte("record"))
	mustGet(t, b, pack, data)
	mustGet(t, b, "backups/x", []byte("record"))
	if got := ListAll(t, b, ""); len(got) != 2 {
		t.Fatalf("the other client lists %v, want both objects", got)
	}
	p := make([]byte, 10)
	if err := b.ReadAt(ctx, pack, p, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, data[1<<20:1<<20+10]) {
		t.Fatal("ReadAt by the other client: wrong bytes")
	}
	// A replace by one client is what the other reads next, even right
	// after it read the old object (drivers that cache layouts).
	data = Random(t, 3<<20)
	put(t, a, pack, data)
	if err := b.ReadAt(ctx, pack, p, 1<<20); err != nil || !bytes.Equal(p, data[1<<20:1<<20+10]) {
		t.Fatalf("ReadAt after the other client replaced the object: %v (or the old bytes)", err)
	}
	put(t, b, "backups/x", []byte("rewritten"))
	mustGet(t, a, "backups/x", []byte("rewritten"))
	if err := b.Delete(ctx, pack); err != nil {
		t.Fatal(err)
	}
	_, err := a.Get(ctx, pack)
	notFound(t, "Get of an object the other client deleted", err)
	notFound(t, "ReadAt of an object the other client deleted", a.ReadAt(ctx, pack, p, 0))
	if got := ListAll(t, a, ""); len(got) != 1 || got[0] != "backups/x" {
		t.Fatalf("List after the other client's Delete: %v", got)
	}
}
