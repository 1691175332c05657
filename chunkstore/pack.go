package chunkstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

const (
	packMagic      = "VBPACK01"
	packEndMagic   = "VBPKEND1"
	packHeaderSize = len(packMagic)
	packEntrySize  = 32 + 4 + 4 + 4 + 1
	packFooterSize = 4 + 4 + len(packEndMagic)
	// packTarget is the size at which a pack is closed (docs/FORMAT.md).
	packTarget = 8 << 20
	// maxPackSize bounds what readers accept; writers stay under packTarget,
	// repack may be a little more generous.
	maxPackSize = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Version 2 (encrypted) packs: the same blobs sealed one by one, and the
// trailer's entries sealed as one envelope, followed by its length.
const (
	sealedPackMagic      = "VBPACK02"
	sealedPackEndMagic   = "VBPKEND2"
	sealedPackFooterSize = 4 + len(sealedPackEndMagic)
)

func appendEntries(b []byte, entries []PackEntry) []byte {
	for _, e := range entries {
		b = append(b, e.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.Offset)
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = binary.LittleEndian.AppendUint32(b, e.RawLength)
		b = append(b, byte(e.Codec))
	}
	return b
}

// packMagicOf is the header a pack of s starts with.
func (s *Store) packMagicOf() string {
	if s.Encrypted() {
		return sealedPackMagic
	}
	return packMagic
}

// appendTrailer appends the trailer and footer for entries to a pack of s
// under construction: in clear with a crc32c (version 1), or sealed.
func (s *Store) appendTrailer(pack []byte, entries []PackEntry) []byte {
	k := s.key.Load()
	if k == nil {
		return appendTrailer(pack, entries)
	}
	start := len(pack)
	pack = k.Seal(pack, appendEntries(make([]byte, 0, len(entries)*packEntrySize), entries), []byte(trailerAD))
	pack = binary.LittleEndian.AppendUint32(pack, uint32(len(pack)-start))
	return append(pack, sealedPackEndMagic...)
}

// appendTrailer appends trailer and footer for entries to a version 1
// pack under construction.
func appendTrailer(pack []byte, entries []PackEntry) []byte {
	start := len(pack)
	pack = appendEntries(pack, entries)
	crc := crc32.Checksum(pack[start:], castagnoli)
	pack = binary.LittleEndian.AppendUint32(pack, uint32(len(entries)))
	pack = binary.LittleEndian.AppendUint32(pack, crc)
	return append(pack, packEndMagic...)
}

// PackBlob is one chunk to put in a pack: its ID and encoded blob.
type PackBlob struct {
	ID   ID
	Blob []byte
}

// EncodePack builds a pack from blobs (used by GC's repack and tests) and
// returns its bytes, its ID (the pack's name) and its entries. Blobs are
// taken as they are; each must be a valid blob.
func EncodePack(blobs []PackBlob) ([]byte, ID, []PackEntry, error) {
	size := packHeaderSize + packFooterSize
	for _, b := range blobs {
		size += len(b.Blob) + packEntrySize
	}
	if size > maxPackSize {
		return nil, ID{}, nil, fmt.Errorf("pack of %d blobs would be %d bytes, more than the %d-byte limit", len(blobs), size, maxPackSize)
	}
	pack := make([]byte, 0, size)
	pack = append(pack, packMagic...)
	entries := make([]PackEntry, 0, len(blobs))
	for _, b := range blobs {
		if len(b.Blob) < blobHeaderSize {
			return nil, ID{}, nil, fmt.Errorf("blob for chunk %s is %d bytes, shorter than a blob header", b.ID, len(b.Blob))
		}
		e := PackEntry{ID: b.ID, Location: Location{
			Offset:    uint32(len(pack)),
			Length:    uint32(len(b.Blob)),
			RawLength: binary.LittleEndian.Uint32(b.Blob[1:]),
			Codec:     Codec(b.Blob[0]),
		}}
		if err := checkLocation(e.Location); err != nil {
			return nil, ID{}, nil, fmt.Errorf("blob for chunk %s: %w", b.ID, err)
		}
		entries = append(entries, e)
		pack = append(pack, b.Blob...)
	}
	pack = appendTrailer(pack, entries)
	id := Sum(pack)
	for i := range entries {
		entries[i].Pack = id
	}
	return pack, id, entries, nil
}

// parseFooter checks a pack's last 16 bytes against the pack size and
// returns the entry count and the trailer's offset and checksum.
func parseFooter(footer []byte, packSize int64) (count uint32, trailerStart int64, crc uint32, err error) {
	if packSize < int64(packHeaderSize+packFooterSize) {
		return 0, 0, 0, corruptf("pack is %d bytes, too short for header and footer", packSize)
	}
	if packSize > maxPackSize {
		return 0, 0, 0, corruptf("pack is %d bytes, more than the %d-byte limit", packSize, maxPackSize)
	}
	if string(footer[8:]) != packEndMagic {
		return 0, 0, 0, corruptf("pack footer magic is %q, want %q", footer[8:], packEndMagic)
	}
	count = binary.LittleEndian.Uint32(footer)
	crc = binary.LittleEndian.Uint32(footer[4:])
	trailerStart = packSize - int64(packFooterSize) - int64(count)*packEntrySize
	if trailerStart < int64(packHeaderSize) {
		return 0, 0, 0, corruptf("pack footer says %d entries, which do not fit in a %d-byte pack", count, packSize)
	}
	return count, trailerStart, crc, nil
}

// parseTrailer decodes and validates the trailer entries (already sized by
// parseFooter) of a pack whose trailer begins at trailerStart.
func parseTrailer(trailer []byte, trailerStart int64, crc uint32, pack ID) ([]PackEntry, error) {
	if got := crc32.Checksum(trailer, castagnoli); got != crc {
		return nil, corruptf("pack trailer crc32c is %08x, footer says %08x", got, crc)
	}
	return parseEntries(trailer, trailerStart, pack, 0)
}

// parseEntries decodes and validates trailer entries of blobs that are
// overhead bytes larger than their plain form (sealing), in a pack whose
// trailer begins at trailerStart.
func parseEntries(trailer []byte, trailerStart int64, pack ID, overhead int) ([]PackEntry, error) {
	if len(trailer)%packEntrySize != 0 {
		return nil, corruptf("pack trailer is %d bytes, not a whole number of %d-byte entries", len(trailer), packEntrySize)
	}
	entries := make([]PackEntry, len(trailer)/packEntrySize)
	end := int64(packHeaderSize)
	for i := range entries {
		b := trailer[i*packEntrySize:]
		e := &entries[i]
		copy(e.ID[:], b[:32])
		e.Pack = pack
		e.Offset = binary.LittleEndian.Uint32(b[32:])
		e.Length = binary.LittleEndian.Uint32(b[36:])
		e.RawLength = binary.LittleEndian.Uint32(b[40:])
		e.Codec = Codec(b[44])
		if err := checkLocationOver(e.Location, overhead); err != nil {
			return nil, fmt.Errorf("pack entry %d (chunk %s): %w", i, e.ID, err)
		}
		if int64(e.Offset) < end {
			return nil, corruptf("pack entry %d (chunk %s) at offset %d overlaps the previous blob or header ending at %d", i, e.ID, e.Offset, end)
		}
		end = int64(e.Offset) + int64(e.Length)
		if end > trailerStart {
			return nil, corruptf("pack entry %d (chunk %s) ends at %d, past the trailer at %d", i, e.ID, end, trailerStart)
		}
	}
	return entries, nil
}

// checkLocation validates the fields of a location that do not depend on
// the pack's size, for a version 1 pack.
func checkLocation(l Location) error { return checkLocationOver(l, 0) }

// checkLocation validates a location in a pack of s.
func (s *Store) checkLocation(l Location) error { return checkLocationOver(l, s.blobOverhead()) }

// checkLocationOver validates a location whose stored blob is overhead
// bytes larger than the blob (sealing adds nonce and tag).
func checkLocationOver(l Location, overhead int) error {
	o := uint32(overhead)
	switch {
	case l.Codec > CodecZstd:
		return corruptf("unknown codec %d", uint8(l.Codec))
	case l.RawLength > MaxChunkSize:
		return corruptf("raw length %d exceeds the maximum chunk size %d", l.RawLength, MaxChunkSize)
	case l.Length < o+blobHeaderSize || l.Length > o+maxBlobSize:
		return corruptf("blob length %d outside %d..%d", l.Length, o+blobHeaderSize, o+maxBlobSize)
	case l.Codec == CodecRaw && l.Length != o+blobHeaderSize+l.RawLength:
		return corruptf("raw blob length %d does not match raw length %d", l.Length, l.RawLength)
	}
	return nil
}

// ParsePack decodes the trailer of a whole pack held in memory, checks
// every entry against the blob headers in data and sets each entry's Pack
// to the BLAKE3 of data.
func ParsePack(data []byte) ([]PackEntry, error) {
	if len(data) < packHeaderSize+packFooterSize {
		return nil, corruptf("pack is %d bytes, too short for header and footer", len(data))
	}
	if string(data[:packHeaderSize]) != packMagic {
		return nil, corruptf("pack header magic is %q, want %q", data[:packHeaderSize], packMagic)
	}
	_, ts, crc, err := parseFooter(data[len(data)-packFooterSize:], int64(len(data)))
	if err != nil {
		return nil, err
	}
	entries, err := parseTrailer(data[ts:len(data)-packFooterSize], ts, crc, Sum(data))
	if err != nil {
		return nil, err
	}
	for i, e := range entries {
		h := data[e.Offset:]
		if Codec(h[0]) != e.Codec || binary.LittleEndian.Uint32(h[1:]) != e.RawLength {
			return nil, corruptf("pack entry %d (chunk %s): blob header says codec %d raw length %d, trailer says codec %d raw length %d",
				i, e.ID, h[0], binary.LittleEndian.Uint32(h[1:]), e.Codec, e.RawLength)
		}
	}
	return entries, nil
}

// ReadPackEntries reads a stored pack's trailer with two ranged reads
// (after a Stat for its size). It does not read or verify the blobs.
func (s *Store) ReadPackEntries(ctx context.Context, pack ID) ([]PackEntry, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	name := packName(pack)
	info, err := s.be.Stat(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", pack, err)
	}
	if s.Encrypted() {
		return s.readSealedEntries(ctx, pack, info.Size)
	}
	var footer [packFooterSize]byte
	if info.Size >= int64(packFooterSize) {
		if err := s.be.ReadAt(ctx, name, footer[:], info.Size-int64(packFooterSize)); err != nil {
			return nil, fmt.Errorf("pack %s: reading footer: %w", pack, err)
		}
	}
	_, ts, crc, err := parseFooter(footer[:], info.Size)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", pack, err)
	}
	trailer := make([]byte, info.Size-int64(packFooterSize)-ts)
	if err := s.be.ReadAt(ctx, name, trailer, ts); err != nil {
		return nil, fmt.Errorf("pack %s: reading trailer: %w", pack, err)
	}
	entries, err := parseTrailer(trailer, ts, crc, pack)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", pack, err)
	}
	return entries, nil
}

// readSealedEntries reads and opens the sealed trailer of a version 2 pack
// of size bytes.
func (s *Store) readSealedEntries(ctx context.Context, pack ID, size int64) ([]PackEntry, error) {
	name := packName(pack)
	over := int64(s.blobOverhead())
	if size < int64(len(sealedPackMagic)+sealedPackFooterSize)+over || size > maxPackSize {
		return nil, fmt.Errorf("pack %s: %w", pack, corruptf("pack is %d bytes, outside %d..%d", size, int64(len(sealedPackMagic)+sealedPackFooterSize)+over, maxPackSize))
	}
	var footer [sealedPackFooterSize]byte
	if err := s.be.ReadAt(ctx, name, footer[:], size-int64(sealedPackFooterSize)); err != nil {
		return nil, fmt.Errorf("pack %s: reading footer: %w", pack, err)
	}
	if string(footer[4:]) != sealedPackEndMagic {
		return nil, fmt.Errorf("pack %s: %w", pack, corruptf("pack footer magic is %q, want %q", footer[4:], sealedPackEndMagic))
	}
	n := int64(binary.LittleEndian.Uint32(footer[:]))
	ts := size - int64(sealedPackFooterSize) - n
	if n < over || ts < int64(len(sealedPackMagic)) {
		return nil, fmt.Errorf("pack %s: %w", pack, corruptf("sealed trailer of %d bytes does not fit in a %d-byte pack", n, size))
	}
	sealed := make([]byte, n)
	if err := s.be.ReadAt(ctx, name, sealed, ts); err != nil {
		return nil, fmt.Errorf("pack %s: reading trailer: %w", pack, err)
	}
	entries, err := s.openTrailer(sealed, ts, pack)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", pack, err)
	}
	return entries, nil
}

// openTrailer opens a sealed trailer that begins at trailerStart and
// decodes its entries.
func (s *Store) openTrailer(sealed []byte, trailerStart int64, pack ID) ([]PackEntry, error) {
	plain, err := s.key.Load().OpenInPlace(sealed, []byte(trailerAD))
	if err != nil {
		return nil, corruptf("sealed pack trailer: %v", err)
	}
	return parseEntries(plain, trailerStart, pack, s.blobOverhead())
}

// ParseSealedPack decodes the trailer of a whole version 2 pack held in
// memory (fuzzing and tests); s must be unlocked.
func (s *Store) ParseSealedPack(data []byte) ([]PackEntry, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	over := s.blobOverhead()
	if len(data) < len(sealedPackMagic)+sealedPackFooterSize+over || len(data) > maxPackSize {
		return nil, corruptf("pack is %d bytes, outside the sealed pack bounds", len(data))
	}
	if string(data[:len(sealedPackMagic)]) != sealedPackMagic {
		return nil, corruptf("pack header magic is %q, want %q", data[:len(sealedPackMagic)], sealedPackMagic)
	}
	footer := data[len(data)-sealedPackFooterSize:]
	if string(footer[4:]) != sealedPackEndMagic {
		return nil, corruptf("pack footer magic is %q, want %q", footer[4:], sealedPackEndMagic)
	}
	n := int(binary.LittleEndian.Uint32(footer))
	ts := len(data) - sealedPackFooterSize - n
	if n < over || n > len(data) || ts < len(sealedPackMagic) {
		return nil, corruptf("sealed trailer of %d bytes does not fit in a %d-byte pack", n, len(data))
	}
	sealed := append([]byte(nil), data[ts:ts+n]...)
	return s.openTrailer(sealed, int64(ts), Sum(data))
}
