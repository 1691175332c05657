//go:build ceph

package rbd

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"

	"github.com/volback/volback/integration/ceph"
)

var seq atomic.Int64

// imageName is a name no other test (or earlier run) uses.
func imageName() string {
	return fmt.Sprintf("t%d-%d-%d", time.Now().UnixNano(), os.Getpid(), seq.Add(1))
}

// locatorOf is the rbd:// locator of image in the test cluster's RBD pool.
func locatorOf(e ceph.Env, image string) string {
	q := url.Values{"conf": {e.Conf}, "user": {e.User}}
	return "rbd://" + e.RBDPool + "/" + image + "?" + q.Encode()
}

// freeLocator is a locator where no image exists; the image is removed
// (snapshots and all) when the test ends if something made it.
func freeLocator(t *testing.T, e ceph.Env) string {
	loc := locatorOf(e, imageName())
	t.Cleanup(func() { destroy(t, loc) })
	return loc
}

// newImage creates an image of size bytes with objects of 1<<order bytes
// and the cluster's default features; it reads as zeros.
func newImage(t *testing.T, e ceph.Env, size int64, order int) string {
	loc := freeLocator(t, e)
	l, err := ParseLocator(loc)
	if err != nil {
		t.Fatal(err)
	}
	_, io, err := ioctx(l)
	if err != nil {
		t.Fatal(err)
	}
	defer io.Destroy()
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(rbd.ImageOptionOrder, uint64(order)); err != nil {
		t.Fatal(err)
	}
	if err := rbd.CreateImage(io, l.Image, uint64(size), opts); err != nil {
		t.Fatalf("create image %s: %v", l.Spec(), err)
	}
	return loc
}

// destroy removes an image and all its snapshots, if it exists.
func destroy(t *testing.T, loc string) {
	l, _ := ParseLocator(loc)
	_, io, err := ioctx(l)
	if err != nil {
		t.Errorf("cleanup of %s: %v", loc, err)
		return
	}
	defer io.Destroy()
	img, err := rbd.OpenImage(io, l.Image, rbd.NoSnapshot)
	if err != nil {
		return // never made
	}
	snaps, _ := img.GetSnapshotNames()
	for _, s := range snaps {
		img.GetSnapshot(s.Name).Remove()
	}
	img.Close()
	if err := rbd.RemoveImage(io, l.Image); err != nil {
		t.Errorf("cleanup: remove image %s: %v", l.Spec(), err)
	}
}

// otherClient connects to the cluster as a client of its own, as QEMU on
// another host would.
func otherClient(t *testing.T, e ceph.Env) *rados.Conn {
	conn, err := rados.NewConnWithUser(e.User)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.ReadConfigFile(e.Conf); err != nil {
		t.Fatal(err)
	}
	if err := conn.Connect(); err != nil {
		t.Fatal(err)
	}
	return conn
}

// holdOpen opens the image for writing from another client, which watches
// it, and returns that client's name and the release.
func holdOpen(t *testing.T, e ceph.Env, loc string) (string, func()) {
	conn := otherClient(t, e)
	l, _ := ParseLocator(loc)
	io, err := conn.OpenIOContext(l.Pool)
	if err != nil {
		t.Fatal(err)
	}
	img, err := rbd.OpenImage(io, l.Image, rbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(func() {
		img.Close()
		io.Destroy()
		conn.Shutdown()
	})
	t.Cleanup(release)
	return fmt.Sprintf("client.%d", conn.GetInstanceID()), release
}

// rbdWatch runs `rbd watch` on the image, a watcher in another process,
// until release.
func rbdWatch(t *testing.T, e ceph.Env, loc string) func() {
	l, _ := ParseLocator(loc)
	cmd := exec.Command("rbd", "--conf", e.Conf, "--id", e.User, "watch", l.Spec())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(func() {
		stdin.Close() // rbd watch ends on enter or end of input
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	t.Cleanup(release)
	// It prints "press enter to exit..." once it watches.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, "press enter") {
		release()
		t.Fatalf("rbd watch %s: %q, %v", l.Spec(), line, err)
	}
	return release
}
