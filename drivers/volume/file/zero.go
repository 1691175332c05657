package file

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Zero deallocates where the kernel can: a punched hole for image files,
// BLKZEROOUT (which uses discard/write-zeroes when the device offers them)
// for block devices. Both fall back to writing zeros.
func (h *handle) Zero(off, length int64) error {
	if err := h.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if h.g != nil {
		// What is gathered for the range must land before the hole.
		if err := h.g.Flush(off, length); err != nil {
			return err
		}
	}
	fd := int(h.f.Fd())
	if h.kind == KindFile {
		err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("punch hole in volume %q at [%d, %d): %w", h.path, off, off+length, err)
		}
		return h.writeZeros(off, length)
	}
	// BLKZEROOUT needs 512-byte alignment: write the unaligned edges.
	start := (off + 511) &^ 511
	end := (off + length) &^ 511
	if start >= end {
		return h.writeZeros(off, length)
	}
	rng := [2]uint64{uint64(start), uint64(end - start)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&rng))); e != 0 {
		return h.writeZeros(off, length)
	}
	if err := h.writeZeros(off, start-off); err != nil {
		return err
	}
	return h.writeZeros(end, off+length-end)
}

var zeroBuf [1 << 20]byte

func (h *handle) writeZeros(off, length int64) error {
	for length > 0 {
		n := min(length, int64(len(zeroBuf)))
		if _, err := h.f.WriteAt(zeroBuf[:n], off); err != nil {
			return fmt.Errorf("write zeros to volume %q at %d: %w", h.path, off, err)
		}
		off += n
		length -= n
	}
	return nil
}
