package rados

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// meta is an object's metadata record, kept in its head's omap.
type meta struct {
	size     int64
	modTime  time.Time
	nonce    uint64 // names the parts; fresh for every Put
	parts    uint32 // 0: the data is inline in the head object
	partSize uint32
}

const (
	metaVersion = 1
	metaLen     = 1 + 8 + 8 + 8 + 4 + 4
)

func (m meta) encode() []byte {
	b := make([]byte, 0, metaLen)
	b = append(b, metaVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.size))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.modTime.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, m.nonce)
	b = binary.LittleEndian.AppendUint32(b, m.parts)
	return binary.LittleEndian.AppendUint32(b, m.partSize)
}

var errBadMeta = errors.New("bad object metadata")

// decodeMeta parses a record read from the cluster, refusing anything the
// readers could not use safely (sizes and part counts that disagree).
func decodeMeta(b []byte) (meta, error) {
	if len(b) != metaLen || b[0] != metaVersion {
		return meta{}, fmt.Errorf("%w: %d bytes, version %d (want %d bytes, version %d)", errBadMeta, len(b), first(b), metaLen, metaVersion)
	}
	m := meta{
		size:     int64(binary.LittleEndian.Uint64(b[1:])),
		modTime:  time.Unix(0, int64(binary.LittleEndian.Uint64(b[9:]))),
		nonce:    binary.LittleEndian.Uint64(b[17:]),
		parts:    binary.LittleEndian.Uint32(b[25:]),
		partSize: binary.LittleEndian.Uint32(b[29:]),
	}
	switch {
	case m.size < 0:
		return meta{}, fmt.Errorf("%w: negative size %d", errBadMeta, m.size)
	case m.parts == 0 && m.partSize != 0:
		return meta{}, fmt.Errorf("%w: inline object with part size %d", errBadMeta, m.partSize)
	case m.parts > 0 && (m.partSize == 0 || partsFor(m.size, int64(m.partSize)) != int64(m.parts)):
		return meta{}, fmt.Errorf("%w: %d parts of %d bytes cannot hold %d bytes", errBadMeta, m.parts, m.partSize, m.size)
	}
	return m, nil
}

// partsFor is how many parts of partSize hold size bytes.
func partsFor(size, partSize int64) int64 { return (size + partSize - 1) / partSize }

func first(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// entry is one name's value in the listing index.
type entry struct {
	pending bool // a Put or Delete of the name is in flight or crashed
	size    int64
	modTime time.Time
	// The parts a crashed Put or Delete may have left: those of the new
	// object (nonce, parts) and of the one it replaced (oldNonce, oldParts).
	nonce, oldNonce uint64
	parts, oldParts uint32
}

const (
	entryVersion = 1
	entryLen     = 1 + 1 + 8 + 8 + 8 + 4 + 8 + 4
)

func (e entry) encode() []byte {
	b := make([]byte, 0, entryLen)
	b = append(b, entryVersion)
	if e.pending {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(e.size))
	b = binary.LittleEndian.AppendUint64(b, uint64(e.modTime.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, e.nonce)
	b = binary.LittleEndian.AppendUint32(b, e.parts)
	b = binary.LittleEndian.AppendUint64(b, e.oldNonce)
	return binary.LittleEndian.AppendUint32(b, e.oldParts)
}

var errBadEntry = errors.New("bad index entry")

func decodeEntry(b []byte) (entry, error) {
	if len(b) != entryLen || b[0] != entryVersion || b[1] > 1 {
		return entry{}, fmt.Errorf("%w: %d bytes, version %d (want %d bytes, version %d)", errBadEntry, len(b), first(b), entryLen, entryVersion)
	}
	e := entry{
		pending:  b[1] == 1,
		size:     int64(binary.LittleEndian.Uint64(b[2:])),
		modTime:  time.Unix(0, int64(binary.LittleEndian.Uint64(b[10:]))),
		nonce:    binary.LittleEndian.Uint64(b[18:]),
		parts:    binary.LittleEndian.Uint32(b[26:]),
		oldNonce: binary.LittleEndian.Uint64(b[30:]),
		oldParts: binary.LittleEndian.Uint32(b[38:]),
	}
	if e.size < 0 {
		return entry{}, fmt.Errorf("%w: negative size %d", errBadEntry, e.size)
	}
	return e, nil
}
