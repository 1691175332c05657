// Package pagecache tells how much of a file the kernel holds in its page
// cache. The tests of the O_DIRECT paths (image files, packs) use it to
// prove that a read or a write really went around the cache.
package pagecache

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Resident is how many pages of [off, off+n) of f are in the page cache;
// off is a multiple of the page size.
func Resident(f *os.File, off, n int64) (int, error) {
	if n == 0 {
		return 0, nil
	}
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("map %s: %w", f.Name(), err)
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (n+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0, fmt.Errorf("mincore %s: %w", f.Name(), e)
	}
	count := 0
	for _, v := range vec {
		count += int(v & 1)
	}
	return count, nil
}
