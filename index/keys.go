package index

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/volback/volback/chunkstore"
)

// Key prefixes; see doc.go.
const (
	keySchema    = "schema"
	prefixVolume = "vol/"
	prefixBackup = "bak/"
	prefixChunk  = "chk/"
	prefixRepo   = "repo/"
	prefixZone   = "zone/"
	// prefixBackupPack holds the packs a backup uploads, recorded with
	// each upload, until the backup is available or its packs removed.
	prefixBackupPack = "bpk/"
	// prefixLossEpoch counts, per repository, the lost chunk entries put.
	prefixLossEpoch = "lost/"
	chunkValueLen   = 1 + 32 + 4 + 4 + 4 + 1 + 4 // version, Location, Refs
	chunkVersion    = 1
)

// checkID refuses ids that would break the key layout: an empty id or one
// holding '/' would alias another record's key or leak into a prefix scan.
func checkID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s id is empty", kind)
	}
	if strings.IndexByte(id, '/') >= 0 {
		return fmt.Errorf("%s id %q contains '/'", kind, id)
	}
	return nil
}

func volumeKey(id string) []byte { return []byte(prefixVolume + id) }
func repoKey(id string) []byte   { return []byte(prefixRepo + id) }
func zoneKey(name string) []byte { return []byte(prefixZone + name) }

func backupPackPrefix(backupID string) []byte { return []byte(prefixBackupPack + backupID + "/") }

func backupPackKey(backupID string, pack chunkstore.ID) []byte {
	return append(backupPackPrefix(backupID), pack[:]...)
}
func backupKey(id string) []byte { return []byte(prefixBackup + id) }

func lossEpochKey(repoID string) []byte { return []byte(prefixLossEpoch + repoID) }

// chunkPrefix is "chk/<repoID>/".
func chunkPrefix(repoID string) []byte {
	p := make([]byte, 0, len(prefixChunk)+len(repoID)+1+len(chunkstore.ID{}))
	p = append(p, prefixChunk...)
	p = append(p, repoID...)
	return append(p, '/')
}

func chunkKey(repoID string, id chunkstore.ID) []byte {
	return append(chunkPrefix(repoID), id[:]...)
}

// encodeChunk lays out a chunk entry in 50 bytes, little-endian:
//
//	version u8 (=1) | pack [32] | offset u32 | length u32 | raw_length u32 | codec u8 | refs u32
func encodeChunk(c Chunk) []byte {
	b := make([]byte, chunkValueLen)
	b[0] = chunkVersion
	copy(b[1:33], c.Pack[:])
	binary.LittleEndian.PutUint32(b[33:], c.Offset)
	binary.LittleEndian.PutUint32(b[37:], c.Length)
	binary.LittleEndian.PutUint32(b[41:], c.RawLength)
	b[45] = byte(c.Codec)
	binary.LittleEndian.PutUint32(b[46:], c.Refs)
	return b
}

// decodeChunk is the inverse of encodeChunk. It checks length and version
// first, so no input can make it panic.
func decodeChunk(b []byte) (Chunk, error) {
	var c Chunk
	if len(b) != chunkValueLen {
		return c, fmt.Errorf("chunk entry is %d bytes, want %d", len(b), chunkValueLen)
	}
	if b[0] != chunkVersion {
		return c, fmt.Errorf("chunk entry version %d, want %d", b[0], chunkVersion)
	}
	copy(c.Pack[:], b[1:33])
	c.Offset = binary.LittleEndian.Uint32(b[33:])
	c.Length = binary.LittleEndian.Uint32(b[37:])
	c.RawLength = binary.LittleEndian.Uint32(b[41:])
	c.Codec = chunkstore.Codec(b[45])
	c.Refs = binary.LittleEndian.Uint32(b[46:])
	return c, nil
}
