package file

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The kernel's own tables answer "who holds this volume": /proc/locks and
// /proc/PID/fdinfo for locks, /proc/self/mountinfo for mounts, /proc/swaps,
// /sys/block for loop devices, partitions and holders. Readers here are
// best effort: an unreadable table reports nothing rather than failing.

// lockEntry is one granted lock of /proc/locks.
type lockEntry struct {
	class string // POSIX, OFDLCK, FLOCK, ...
	write bool
	pid   int   // -1 for OFD locks: the kernel does not say
	start int64 // first byte
	end   int64 // last byte, -1 for EOF
}

// locksOn lists the granted locks on the inode ino of device dev.
func locksOn(dev, ino uint64) []lockEntry {
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	want := inodeToken(dev, ino)
	var out []lockEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// "1: OFDLCK ADVISORY WRITE -1 fe:00:9979250 0 EOF"; waiters have "->".
		if len(f) < 8 || f[1] == "->" || f[5] != want {
			continue
		}
		e := lockEntry{class: f[1], write: f[3] == "WRITE", end: -1}
		e.pid, _ = strconv.Atoi(f[4])
		e.start, _ = strconv.ParseInt(f[6], 10, 64)
		if f[7] != "EOF" {
			e.end, _ = strconv.ParseInt(f[7], 10, 64)
		}
		out = append(out, e)
	}
	return out
}

// inodeToken is how /proc/locks and fdinfo name an inode: MAJ:MIN:INO,
// major and minor in hex.
func inodeToken(dev, ino uint64) string {
	return fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
}

// pids lists the numeric entries of /proc.
func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// lockHolders finds the processes whose open files hold a lock on the
// inode: each fdinfo lists the locks of its open file description, which
// is the only place the owner of an OFD lock shows.
func lockHolders(dev, ino uint64) []int {
	token := " " + inodeToken(dev, ino) + " "
	var out []int
	for _, pid := range pids() {
		if holdsLock(pid, token) {
			out = append(out, pid)
		}
	}
	return out
}

// holdsLock reports whether an fdinfo of pid lists a lock on token's inode.
func holdsLock(pid int, token string) bool {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "lock:") && strings.Contains(line, token) {
				return true
			}
		}
	}
	return false
}

// openers lists the processes with the block device rdev open.
func openers(rdev uint64) []int {
	var out []int
	for _, pid := range pids() {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			var st unix.Stat_t
			if unix.Stat(filepath.Join(dir, e.Name()), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == rdev {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// describePids is "pid 12 (qemu-nbd)" or "pids 12 (a), 13 (b)".
func describePids(ps []int) string {
	sort.Ints(ps)
	var parts []string
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p] {
			continue
		}
		seen[p] = true
		s := strconv.Itoa(p)
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); err == nil {
			s += " (" + strings.TrimSpace(string(b)) + ")"
		}
		parts = append(parts, s)
	}
	if len(parts) == 1 {
		return "pid " + parts[0]
	}
	return "pids " + strings.Join(parts, ", ")
}

// mount is one line of mountinfo.
type mount struct {
	dev    uint64 // st_dev of the mounted filesystem
	point  string
	source string
}

func mounts() []mount {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// "36 35 98:0 /mnt1 /mnt/parent rw - ext3 /dev/root rw"
		f := strings.Fields(sc.Text())
		sep := -1
		for i, s := range f {
			if s == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(f[2], "%d:%d", &maj, &min); err != nil {
			continue
		}
		out = append(out, mount{dev: unix.Mkdev(maj, min), point: unescape(f[4]), source: unescape(f[sep+2])})
	}
	return out
}

// unescape undoes the octal escapes (\040 for a space) of /proc tables.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// swaps lists the paths of /proc/swaps.
func swaps() []string {
	b, err := os.ReadFile("/proc/swaps")
	if err != nil {
		return nil
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 {
			out = append(out, unescape(f[0]))
		}
	}
	return out
}

// sysBlock is the sysfs directory of block device rdev.
func sysBlock(rdev uint64) string {
	return fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// partitions returns the partitions of the block device rdev (name -> rdev).
func partitions(rdev uint64) map[string]uint64 {
	out := map[string]uint64{}
	dir := sysBlock(rdev)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "dev"))
		var maj, min uint32
		if err == nil {
			if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &min); err == nil {
				out["/dev/"+e.Name()] = unix.Mkdev(maj, min)
			}
		}
	}
	return out
}

// holders lists the devices stacked on rdev (device mapper, md).
func holders(rdev uint64) []string {
	ents, _ := os.ReadDir(filepath.Join(sysBlock(rdev), "holders"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// loopsBacking lists the loop devices whose backing file is the inode ino
// of device dev. It asks each bound loop device (LOOP_GET_STATUS64 gives
// the backing file's device and inode, whatever its path now is) and falls
// back to sysfs's backing_file path when the device cannot be opened.
func loopsBacking(dev, ino uint64) []string {
	ents, _ := os.ReadDir("/sys/block")
	var out []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		backing, err := os.ReadFile(filepath.Join("/sys/block", name, "loop", "backing_file"))
		if err != nil {
			continue // not bound
		}
		if f, err := os.Open("/dev/" + name); err == nil {
			info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
			f.Close()
			if err == nil {
				if info.Device == dev && info.Inode == ino {
					out = append(out, "/dev/"+name)
				}
				continue
			}
		}
		var st unix.Stat_t
		p := strings.TrimSuffix(strings.TrimSpace(string(backing)), " (deleted)")
		if unix.Stat(p, &st) == nil && st.Dev == dev && st.Ino == ino {
			out = append(out, "/dev/"+name)
		}
	}
	sort.Strings(out)
	return out
}
