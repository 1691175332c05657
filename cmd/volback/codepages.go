package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// dropCodePages drops from the process's RSS the executable pages mapped
// from files (the binary's code, the Ceph and C libraries'), which loading
// touched: the Ceph libraries' static constructors alone left ~7 MiB of
// their code resident in every process, Ceph used or not. The pages stay
// in the page cache; code that runs again is mapped back with a minor
// fault. Only mappings without private dirty pages are advised
// (MADV_DONTNEED would lose those); code is never written, and a library
// is never unmapped here (nothing is dlclosed), so the addresses read from
// /proc/self/smaps stay valid.
func dropCodePages() {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return
	}
	defer f.Close()
	type mapping struct{ start, end uint64 }
	var code []mapping
	var cur *mapping
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		switch {
		case len(fields) == 0:
		case !strings.HasSuffix(fields[0], ":"): // a mapping's first line
			cur = nil
			lo, hi, ok := strings.Cut(fields[0], "-")
			if !ok || len(fields) < 6 || fields[1] != "r-xp" || !strings.HasPrefix(fields[5], "/") {
				continue
			}
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil && end > start {
				code = append(code, mapping{start, end})
				cur = &code[len(code)-1]
			}
		case cur != nil && fields[0] == "Private_Dirty:" && len(fields) > 1 && fields[1] != "0":
			code = code[:len(code)-1] // written: leave it alone
			cur = nil
		}
	}
	if s.Err() != nil {
		return
	}
	for _, m := range code {
		unix.Syscall(unix.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), unix.MADV_DONTNEED)
	}
}
