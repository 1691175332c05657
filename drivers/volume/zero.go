package volume

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Zero deallocates where the kernel can: a punched hole for image files,
// BLKZEROOUT (which uses discard/write-zeroes when the device offers them)
// for block devices. Both fall back to writing zeros.
func (v *file) Zero(off, length int64) error {
	if err := v.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	fd := int(v.f.Fd())
	if v.kind == KindFile {
		err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("punch hole in volume %q at [%d, %d): %w", v.path, off, off+length, err)
		}
		return v.writeZeros(off, length)
	}
	// BLKZEROOUT needs 512-byte alignment: write the unaligned edges.
	start := (off + 511) &^ 511
	end := (off + length) &^ 511
	if start >= end {
		return v.writeZeros(off, length)
	}
	rng := [2]uint64{uint64(start), uint64(end - start)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&rng))); e != 0 {
		return v.writeZeros(off, length)
	}
	if err := v.writeZeros(off, start-off); err != nil {
		return err
	}
	return v.writeZeros(end, off+length-end)
}

var zeroBuf [1 << 20]byte

func (v *file) writeZeros(off, length int64) error {
	for length > 0 {
		n := min(length, int64(len(zeroBuf)))
		if _, err := v.f.WriteAt(zeroBuf[:n], off); err != nil {
			return fmt.Errorf("write zeros to volume %q at %d: %w", v.path, off, err)
		}
		off += n
		length -= n
	}
	return nil
}
