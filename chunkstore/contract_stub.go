// Package chunkstore implements the repository format (docs/FORMAT.md) over a
// repo.Backend: content-addressed chunks compressed into self-describing
// packs, manifests and backup records, and verified, cached reads.
package chunkstore

// CONTRACT STUB: the chunkstore helper replaces this file with the real
// implementation, keeping every exported name and signature below.

import (
	"context"
	"errors"
	"time"

	"github.com/volback/volback/drivers/repo"
)

// ID is the BLAKE3-256 digest of a chunk's raw bytes (or a pack's bytes).
type ID [32]byte

// String is the lowercase hex form.
func (id ID) String() string { panic("stub") }

// ParseID parses the hex form.
func ParseID(s string) (ID, error) { panic("stub") }

// Sum hashes b with BLAKE3-256.
func Sum(b []byte) ID { panic("stub") }

// IsZero reports whether every byte of b is zero (fast, word at a time).
func IsZero(b []byte) bool { panic("stub") }

// Codec says how a blob's payload is encoded.
type Codec uint8

const (
	CodecRaw  Codec = 0
	CodecZstd Codec = 1
)

// Location is where a chunk's blob lives.
type Location struct {
	Pack      ID
	Offset    uint32
	Length    uint32 // blob bytes, header included
	RawLength uint32
	Codec     Codec
}

// PackEntry is one trailer entry of a pack.
type PackEntry struct {
	ID ID
	Location
}

// Errors callers test with errors.Is.
var (
	ErrCorrupt = errors.New("repository data corrupt")
	ErrVersion = errors.New("unsupported repository format version")
)

// Config is the repository's `config` object.
type Config struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	ChunkSize int       `json:"chunk_size"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
}

// Object names.
func PackName(id ID) string               { panic("stub") }
func ManifestName(backupID string) string { panic("stub") }
func RecordName(backupID string) string   { panic("stub") }

// Compression settings for writers: Level 0 = none, else zstd level 1..22
// mapped to klauspost's speed levels.
type Compression struct{ Level int }

// Store is an opened repository.
type Store struct{}

// Init writes a new config (refusing when one exists) and returns the store.
func Init(ctx context.Context, be repo.Backend, chunkSize int) (*Store, error) { panic("stub") }

// Open reads and checks the config of an existing repository.
func Open(ctx context.Context, be repo.Backend) (*Store, error) { panic("stub") }

// OpenOrInit opens the repository, initialising it with chunkSize when it has no config.
func OpenOrInit(ctx context.Context, be repo.Backend, chunkSize int) (*Store, error) { panic("stub") }

func (s *Store) Config() Config        { panic("stub") }
func (s *Store) Backend() repo.Backend { panic("stub") }

// ReadChunk fetches the blob at loc, decodes it into a buffer (dst reused when
// large enough) and verifies its hash equals id. Errors wrap ErrCorrupt or
// repo.ErrNotFound.
func (s *Store) ReadChunk(ctx context.Context, id ID, loc Location, dst []byte) ([]byte, error) {
	panic("stub")
}

// Packer assembles compressed blobs into packs and uploads full packs in the
// background. Add is safe for concurrent use and compresses in the caller's
// goroutine.
type Packer struct{}

// NewPacker starts a packer writing to s; uploads run on `uploaders` goroutines.
func (s *Store) NewPacker(ctx context.Context, comp Compression, uploaders int) *Packer {
	panic("stub")
}

// Add compresses raw and appends it to the current pack; raw may be reused
// once Add returns. It returns the stored (compressed) size.
func (p *Packer) Add(id ID, raw []byte) (stored int, err error) { panic("stub") }

// Close flushes the last pack, waits until every pack is durable and
// returns the entries of all packs written. After an error nothing written
// is referenced and the packs become garbage for GC.
func (p *Packer) Close() ([]PackEntry, error) { panic("stub") }

// Abort stops uploading and discards what is buffered.
func (p *Packer) Abort() { panic("stub") }

// EncodePack builds a pack from blobs (used by GC's repack and tests).
// ReadPackEntries reads a stored pack's trailer with two ranged reads.
func (s *Store) ReadPackEntries(ctx context.Context, pack ID) ([]PackEntry, error) { panic("stub") }

// ParsePack decodes the trailer of a whole pack held in memory.
func ParsePack(data []byte) ([]PackEntry, error) { panic("stub") }

// Manifest maps chunk index -> chunk ID (docs/FORMAT.md).
type Manifest struct {
	ChunkSize int
	Size      int64
	IDs       []ID     // unique IDs in first-seen order
	Refs      []uint32 // per chunk: 0 = zero chunk, k = IDs[k-1]
}

// NewManifest makes an all-zero manifest for a volume of size bytes.
func NewManifest(size int64, chunkSize int) *Manifest { panic("stub") }

// Set records that chunk i holds id. Not safe for concurrent use.
func (m *Manifest) Set(i int, id ID) { panic("stub") }

// Chunk returns the ID of chunk i and false when it is a zero chunk.
func (m *Manifest) Chunk(i int) (ID, bool) { panic("stub") }

// Chunks is the number of chunks.
func (m *Manifest) Chunks() int { panic("stub") }

// Encode serialises the manifest and returns it with its digest.
func (m *Manifest) Encode() (data []byte, digest ID) { panic("stub") }

// DecodeManifest parses and verifies an encoded manifest.
func DecodeManifest(b []byte) (*Manifest, ID, error) { panic("stub") }

// Record is a backup record (docs/FORMAT.md).
type Record struct {
	FormatVersion    int       `json:"format_version"`
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	Description      string    `json:"description"`
	VolumeID         string    `json:"volume_id"`
	VolumeName       string    `json:"volume_name"`
	VolumeSizeBytes  int64     `json:"volume_size_bytes"`
	ParentID         string    `json:"parent_id"`
	SnapshotID       string    `json:"snapshot_id"`
	IsIncremental    bool      `json:"is_incremental"`
	SizeBytes        int64     `json:"size_bytes"`
	ObjectCount      int       `json:"object_count"`
	StoredBytes      int64     `json:"stored_bytes"`
	AvailabilityZone string    `json:"availability_zone"`
	Container        string    `json:"container"`
	ProjectID        string    `json:"project_id"`
	CreatedAt        time.Time `json:"created_at"`
	DataTimestamp    time.Time `json:"data_timestamp"`
	RepositoryID     string    `json:"repository_id"`
	ChunkSize        int       `json:"chunk_size"`
	ManifestDigest   string    `json:"manifest_digest"`
}

// EncodeRecord / DecodeRecord (validating every field) for record objects.
func EncodeRecord(r *Record) []byte          { panic("stub") }
func DecodeRecord(b []byte) (*Record, error) { panic("stub") }

// Locator finds where a chunk is stored (implemented over the catalog).
type Locator interface {
	Locate(ctx context.Context, id ID) (Location, error)
}

// Cache is a bounded LRU of decoded chunks shared by all images of a store.
type Cache struct{}

func NewCache(maxBytes int64) *Cache { panic("stub") }

// Image is a read-only view of one backup: io.ReaderAt over the manifest,
// with verified, cached chunk reads and parallel read-ahead for sequential
// readers. Safe for concurrent use.
type Image struct{}

// ImageOptions tune reads.
type ImageOptions struct {
	Cache     *Cache // shared; nil = a small private one
	ReadAhead int    // chunks fetched ahead of a sequential reader
	Name      string // backup id, for error messages
}

func (s *Store) OpenImage(m *Manifest, loc Locator, opt ImageOptions) *Image { panic("stub") }
func (im *Image) Size() int64                                                { panic("stub") }
func (im *Image) ReadAt(p []byte, off int64) (int, error)                    { panic("stub") }
func (im *Image) Close() error                                               { panic("stub") }
