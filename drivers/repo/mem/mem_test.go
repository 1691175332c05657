package mem

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/repo/repotest"
)

var ctx = context.Background()

var seq atomic.Int64

// fresh returns a new repository name and forgets it when t ends.
func fresh(t *testing.T) string {
	name := fmt.Sprintf("test-%d", seq.Add(1))
	t.Cleanup(func() { Remove(name) })
	return name
}

func open(t *testing.T, url string, create bool) repo.Backend {
	t.Helper()
	b, err := repo.Open(ctx, url, create)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	repotest.Run(t, func(t *testing.T) repo.Backend { return open(t, "mem://"+fresh(t), true) })
}

func TestConformanceWithLimit(t *testing.T) {
	repotest.Run(t, func(t *testing.T) repo.Backend {
		return open(t, "mem://"+fresh(t)+"?max_object_size=10485760", true)
	})
}

func twoClients(t *testing.T) (repo.Backend, repo.Backend) {
	name := fresh(t)
	return open(t, "mem://"+name, true), open(t, "mem://"+name, false)
}

func TestLocker(t *testing.T) { repotest.RunLocker(t, twoClients) }

func TestShared(t *testing.T) { repotest.RunShared(t, twoClients) }

func TestOpen(t *testing.T) {
	for url, want := range map[string]string{
		"mem://never-created":         "does not exist",
		"mem://a/b":                   "mem://NAME",
		"mem://x?max_object_size=-1":  "positive",
		"mem://x?max_object_size=big": "positive",
		"mem://x?colour=blue":         "unknown parameter",
	} {
		_, err := repo.Open(ctx, url, strings.Contains(url, "?"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open %s: %v, want an error saying %q", url, err, want)
		}
	}
}
