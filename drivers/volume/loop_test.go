package volume

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// loopDevice attaches a 64 MiB image holding data to a loop device and
// detaches it when the test ends.
func loopDevice(t *testing.T, data []byte) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach a loop device")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup is not installed")
	}
	backing = filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(backing, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -f --show: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

func TestLoopDevice(t *testing.T) {
	const size = 64 * MiB
	data := random(t, size)
	dev, backing := loopDevice(t, data)

	if k, err := Kind(dev); err != nil || k != KindBlock {
		t.Fatalf("Kind(%s): %q, %v", dev, k, err)
	}
	src, err := OpenSource(dev)
	if err != nil {
		t.Fatal(err)
	}
	if src.Size() != size {
		t.Fatalf("%s: Size %d, want %d", dev, src.Size(), size)
	}
	for _, off := range []int64{0, 12345, 31 * MiB, size - 4096} {
		if got := readBack(t, src, off, 4096); !bytes.Equal(got, data[off:off+4096]) {
			t.Fatalf("%s: wrong bytes at %d", dev, off)
		}
	}
	if exts, err := src.Allocated(ctx); err != nil || len(exts) != 1 || exts[0] != (Extent{0, size}) {
		t.Fatalf("Allocated on a block device: %v, %v; want the whole device", exts, err)
	}
	src.Close()

	tg, err := OpenTarget(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if tg.Fresh() || tg.Size() != size {
		t.Fatalf("OpenTarget: Fresh %v Size %d", tg.Fresh(), tg.Size())
	}
	patch := random(t, 100000)
	const patchOff = 7*MiB + 3
	if _, err := tg.WriteAt(patch, patchOff); err != nil {
		t.Fatal(err)
	}
	// Unaligned edges exercise both BLKZEROOUT and the write-zeros fallback.
	// A buffered write sharing a page with the zeroed range must survive.
	const zOff, zLen = 20*MiB + 777, 5*MiB + 1000
	edge := random(t, 500)
	if _, err := tg.WriteAt(edge, zOff-500); err != nil {
		t.Fatal(err)
	}
	if err := tg.Zero(zOff, zLen); err != nil {
		t.Fatal(err)
	}
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.WriteAt([]byte{1}, size); err == nil {
		t.Fatal("WriteAt past the device end succeeded")
	}
	want := append([]byte(nil), data...)
	copy(want[patchOff:], patch)
	copy(want[zOff-500:], edge)
	clear(want[zOff : zOff+zLen])

	// Through a fresh handle on the device, and through the backing file.
	src, err = OpenSource(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got := readBack(t, src, 0, size); !bytes.Equal(got, want) {
		t.Fatalf("%s does not read back the written patch and zeroed range", dev)
	}
	if got, err := os.ReadFile(backing); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("backing file does not hold the written patch and zeroed range (%v)", err)
	}
}

// TestLoopDeviceInUse holds the device exclusively, as a mount would, and
// checks OpenTarget refuses to write under it while OpenSource may read.
func TestLoopDeviceInUse(t *testing.T) {
	dev, _ := loopDevice(t, random(t, MiB))
	holder, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if tg, err := OpenTarget(dev); err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), dev) {
		closeIf(tg, err)
		t.Fatalf("OpenTarget on a held device: %v, want an in-use refusal naming %s", err, dev)
	}
	src, err := OpenSource(dev)
	if err != nil {
		t.Fatalf("OpenSource on a held device: %v", err)
	}
	src.Close()
	holder.Close()
	tg, err := OpenTarget(dev)
	if err != nil {
		t.Fatalf("OpenTarget after release: %v", err)
	}
	tg.Close()
}
