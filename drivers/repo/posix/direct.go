package posix

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directMin is the smallest object written with O_DIRECT: packs (8 MiB)
// are, small objects (manifest heads, locks, configs) are not.
const directMin = 1 << 20

// directAlign is the offset, length and memory alignment assumed for
// O_DIRECT (a 4 KiB filesystem block).
const directAlign = 4096

// writeObject writes data to the new file f: its 4 KiB-aligned bulk with
// O_DIRECT when it is large and its memory aligned (no copy into the page
// cache, and the disk writes it now rather than at the fsync), the rest
// (and everything, where direct IO is refused) through f.
func writeObject(f *os.File, data []byte) error {
	bulk := len(data) &^ (directAlign - 1)
	if len(data) < directMin || uintptr(unsafe.Pointer(&data[0]))%directAlign != 0 {
		bulk = 0
	}
	if bulk > 0 {
		if d, err := os.OpenFile(f.Name(), os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
			_, err = d.WriteAt(data[:bulk], 0)
			d.Close()
			if err != nil && !errors.Is(err, unix.EINVAL) {
				return err
			}
			if err != nil {
				bulk = 0 // refused: all buffered
			}
		} else {
			bulk = 0
		}
	}
	_, err := f.WriteAt(data[bulk:], int64(bulk))
	return err
}
