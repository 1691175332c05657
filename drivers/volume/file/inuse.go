package file

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/volback/volback/drivers/volume"
	"golang.org/x/sys/unix"
)

// qemuWriteByte is the byte QEMU locks (shared) while it holds an image
// with write permission: its lock bytes are 100 + the permission bit, and
// BLK_PERM_WRITE is bit 1. An OFD read lock on a few bytes including it
// means "a QEMU is writing".
const qemuWriteByte = 101

// fileUsage reports what holds an image file: a loop device backing it,
// swap on it, or a fcntl lock (POSIX, or OFD as QEMU takes) of another open
// file description. f is an open descriptor of the file; its own locks do
// not count.
func fileUsage(path string, f *os.File) (volume.Usage, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return volume.Usage{}, fmt.Errorf("volume %q: %w", path, err)
	}
	if loops := loopsBacking(st.Dev, st.Ino); len(loops) > 0 {
		return volume.Usage{InUse: true, Reason: "backs " + strings.Join(loops, ", "),
			Fix: fmt.Sprintf("unmount what is mounted from %s, then detach it (losetup -d %s)", loops[0], loops[0])}, nil
	}
	if swapOn(st, false) {
		return volume.Usage{InUse: true, Reason: "used as swap", Fix: "swapoff " + path}, nil
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); noLocks(err) {
		return volume.Usage{}, nil // no locks on this filesystem, so none held
	} else if err != nil {
		return volume.Usage{}, fmt.Errorf("volume %q: testing for locks: %w", path, err)
	}
	if lk.Type == unix.F_UNLCK {
		return volume.Usage{}, nil
	}
	return lockUsage(st, lk), nil
}

// lockUsage describes the locks on the file: who holds them (the kernel
// names OFD lock owners only in their fdinfo) and whether they write.
func lockUsage(st unix.Stat_t, conflict unix.Flock_t) volume.Usage {
	write := conflict.Type == unix.F_WRLCK
	var ps []int
	ofd := false
	for _, e := range locksOn(st.Dev, st.Ino) {
		if e.class != "POSIX" && e.class != "OFDLCK" {
			continue
		}
		if e.write || (e.class == "OFDLCK" && e.end >= 0 && e.start <= qemuWriteByte && e.end >= qemuWriteByte) {
			write = true
		}
		if e.pid > 0 {
			ps = append(ps, e.pid)
		} else {
			ofd = true
		}
	}
	if ofd || len(ps) == 0 {
		ps = append(ps, lockHolders(st.Dev, st.Ino)...)
	}
	if len(ps) == 0 && conflict.Pid > 0 {
		ps = append(ps, int(conflict.Pid))
	}
	who := "another program"
	if len(ps) > 0 {
		who = describePids(ps)
	}
	how := "read-locked"
	if write {
		how = "write-locked"
	}
	return volume.Usage{InUse: true, Reason: how + " by " + who,
		Fix: fmt.Sprintf("stop %s or have it close the image (a virtual machine using it: shut it down or detach the disk)", who)}
}

// swapOn reports whether the file (or, with block, the device) is swap.
func swapOn(st unix.Stat_t, block bool) bool {
	for _, p := range swaps() {
		var s unix.Stat_t
		if unix.Stat(p, &s) != nil {
			continue
		}
		if block && s.Mode&unix.S_IFMT == unix.S_IFBLK && s.Rdev == st.Rdev {
			return true
		}
		if !block && s.Mode&unix.S_IFMT == unix.S_IFREG && s.Dev == st.Dev && s.Ino == st.Ino {
			return true
		}
	}
	return false
}

// blockUsage reports what holds a block device: a mount of it or of one of
// its partitions, a device stacked on it, swap, or any exclusive opener
// (which the kernel reveals by refusing our own O_EXCL open).
func blockUsage(path string) (volume.Usage, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return volume.Usage{}, fmt.Errorf("volume %q: %w", path, err)
	}
	devs := map[string]uint64{path: st.Rdev}
	for name, rdev := range partitions(st.Rdev) {
		devs[name] = rdev
	}
	for _, m := range mounts() {
		for name, rdev := range devs {
			if m.dev == rdev || sameDevice(m.source, rdev) {
				what := "mounted at " + m.point
				if name != path {
					what = "its partition " + name + " is " + what
				}
				return volume.Usage{InUse: true, Reason: what, Fix: "unmount it (umount " + m.point + ")"}, nil
			}
		}
	}
	for name, rdev := range devs {
		if hs := holders(rdev); len(hs) > 0 {
			what := "held by " + strings.Join(hs, ", ")
			if name != path {
				what = "its partition " + name + " is " + what
			}
			return volume.Usage{InUse: true, Reason: what + " (a device stacked on it: LVM, dm-crypt, multipath or RAID)",
				Fix: "remove what is stacked on it (lsblk " + path + " shows it)"}, nil
		}
	}
	if swapOn(st, true) {
		return volume.Usage{InUse: true, Reason: "used as swap", Fix: "swapoff " + path}, nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_EXCL, 0)
	if err == nil {
		f.Close()
		return volume.Usage{}, nil
	}
	if !errors.Is(err, unix.EBUSY) {
		return volume.Usage{}, fmt.Errorf("volume %q: %w", path, err)
	}
	who := "another program"
	if ps := openers(st.Rdev); len(ps) > 0 {
		who = "a program among " + describePids(ps)
		if len(ps) == 1 {
			who = describePids(ps)
		}
	}
	return volume.Usage{InUse: true, Reason: "held open exclusively by " + who,
		Fix: "stop " + who + " or have it release the device"}, nil
}

// sameDevice reports whether path (a mount source) is the block device rdev.
func sameDevice(path string, rdev uint64) bool {
	if !strings.HasPrefix(path, "/") {
		return false
	}
	var s unix.Stat_t
	return unix.Stat(path, &s) == nil && s.Mode&unix.S_IFMT == unix.S_IFBLK && s.Rdev == rdev
}
