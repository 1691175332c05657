package chunkstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/drivers/repo"
)

// FormatVersion is the repository format version this package writes. It
// reads versions 1 (manifests in one object) and 2 (segmented manifests);
// a version-1 repository is upgraded (its config rewritten) when the first
// segmented manifest is stored in it.
const FormatVersion = 2

const configName = "config"

// Config is the repository's `config` object.
type Config struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	ChunkSize int       `json:"chunk_size"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
}

// Store is an opened repository.
type Store struct {
	be         repo.Backend
	cfg        Config
	lockOpt    LockOptions
	packTarget int // 0: packTarget
	segChunks  int // 0: DefaultSegmentChunks

	upgradeMu sync.Mutex // guards cfg.Version while upgrade rewrites the config
}

// Init writes a new config (refusing when one exists) and returns the store.
func Init(ctx context.Context, be repo.Backend, chunkSize int) (*Store, error) {
	if err := CheckChunkSize(chunkSize); err != nil {
		return nil, fmt.Errorf("initialising repository %s: %w", be.Location(), err)
	}
	if _, err := be.Stat(ctx, configName); err == nil {
		return nil, fmt.Errorf("initialising repository %s: it already has a config (it is a repository); open it instead, or choose an empty location", be.Location())
	} else if !errors.Is(err, repo.ErrNotFound) {
		return nil, fmt.Errorf("initialising repository %s: checking for an existing config: %w", be.Location(), err)
	}
	cfg := Config{
		Format:    "volback",
		Version:   FormatVersion,
		ID:        uuid.NewString(),
		ChunkSize: chunkSize,
		Hash:      "blake3-256",
		CreatedAt: time.Now().UTC().Truncate(time.Second),
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := be.Put(ctx, configName, append(data, '\n')); err != nil {
		return nil, fmt.Errorf("initialising repository %s: writing config: %w", be.Location(), err)
	}
	return &Store{be: be, cfg: cfg}, nil
}

// Open reads and checks the config of an existing repository. A missing
// config is an error wrapping repo.ErrNotFound.
func Open(ctx context.Context, be repo.Backend) (*Store, error) {
	data, err := be.Get(ctx, configName)
	if err != nil {
		if errors.Is(err, repo.ErrNotFound) {
			return nil, fmt.Errorf("repository %s has no config: it is not an initialised volback repository: %w", be.Location(), err)
		}
		return nil, fmt.Errorf("repository %s: reading config: %w", be.Location(), err)
	}
	cfg, err := parseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", be.Location(), err)
	}
	return &Store{be: be, cfg: cfg}, nil
}

func parseConfig(data []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return cfg, corruptf("config is not valid JSON: %v", err)
	}
	if cfg.Format != "volback" {
		return cfg, corruptf("config format is %q, want \"volback\"", cfg.Format)
	}
	if cfg.Version < 1 || cfg.Version > FormatVersion {
		return cfg, fmt.Errorf("%w: the repository has format version %d and this volback reads version %d; upgrade volback to one that supports version %d",
			ErrVersion, cfg.Version, FormatVersion, cfg.Version)
	}
	if cfg.Hash != "blake3-256" {
		return cfg, corruptf("config hash is %q, want \"blake3-256\"", cfg.Hash)
	}
	if err := CheckChunkSize(cfg.ChunkSize); err != nil {
		return cfg, corruptf("config: %v", err)
	}
	if _, err := uuid.Parse(cfg.ID); err != nil || len(cfg.ID) != 36 {
		return cfg, corruptf("config id %q is not a UUID", cfg.ID)
	}
	return cfg, nil
}

// OpenOrInit opens the repository, initialising it with chunkSize when it has no config.
func OpenOrInit(ctx context.Context, be repo.Backend, chunkSize int) (*Store, error) {
	s, err := Open(ctx, be)
	if errors.Is(err, repo.ErrNotFound) {
		return Init(ctx, be, chunkSize)
	}
	return s, err
}

func (s *Store) Config() Config {
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	return s.cfg
}

// upgrade rewrites a version-1 repository's config as version 2 before
// the first version-2 object is stored, so that an older volback refuses
// the repository instead of misreading it. Idempotent: concurrent writers
// write the same config.
func (s *Store) upgrade(ctx context.Context) error {
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	if s.cfg.Version >= FormatVersion {
		return nil
	}
	cfg := s.cfg
	cfg.Version = FormatVersion
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := s.be.Put(ctx, configName, append(data, '\n')); err != nil {
		return fmt.Errorf("upgrading repository %s to format version %d: writing config: %w", s.be.Location(), FormatVersion, err)
	}
	s.cfg = cfg
	return nil
}

// SetPackSize makes packers close packs at n bytes instead of the 8 MiB
// default (tests use small packs so a few MiB of data spread over many).
// n is clamped to what readers accept.
func (s *Store) SetPackSize(n int) {
	s.packTarget = max(min(n, maxPackSize), 4<<10)
}

// SetSegmentChunks makes manifest writers cover n chunks per segment
// instead of DefaultSegmentChunks (a power of two, see CheckSegmentChunks).
func (s *Store) SetSegmentChunks(n int) error {
	if err := CheckSegmentChunks(n); err != nil {
		return err
	}
	s.segChunks = n
	return nil
}

func (s *Store) packSize() int {
	if s.packTarget > 0 {
		return s.packTarget
	}
	return packTarget
}

// blobBufs recycles the buffers compressed blobs are read into.
var blobBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10+blobHeaderSize); return &b }}

// ReadChunk fetches the blob at loc, decodes it into a buffer (dst reused when
// large enough) and verifies its hash equals id. Errors wrap ErrCorrupt or
// repo.ErrNotFound and name the chunk and pack.
func (s *Store) ReadChunk(ctx context.Context, id ID, loc Location, dst []byte) ([]byte, error) {
	if err := checkLocation(loc); err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: bad location: %w", id, loc.Pack, err)
	}
	bp := blobBufs.Get().(*[]byte)
	defer blobBufs.Put(bp)
	if cap(*bp) < int(loc.Length) {
		*bp = make([]byte, loc.Length)
	}
	blob := (*bp)[:loc.Length]
	if err := s.be.ReadAt(ctx, packName(loc.Pack), blob, int64(loc.Offset)); err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
	}
	raw, codec, err := DecodeBlob(blob, dst)
	if err == nil && (codec != loc.Codec || len(raw) != int(loc.RawLength)) {
		err = corruptf("blob (%s, %d bytes) does not match the catalog location (%s, %d bytes)", codec, len(raw), loc.Codec, loc.RawLength)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
	}
	if got := Sum(raw); got != id {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("decoded bytes hash to %s", got))
	}
	return raw, nil
}

// ZstdSlack is the spare room ReadChunkInto wants past a chunk in its
// buffer: with it the zstd decoder uses its fast whole-block copies.
const ZstdSlack = 64

// ReadChunkInto is ReadChunk for hot paths (mount, restore): a raw blob is
// read straight into buf and used in place (no second copy), and a zstd
// blob is decoded into buf with ZstdSlack to spare. buf must hold the blob
// and the decoded chunk plus ZstdSlack; larger chunks (only a corrupt
// manifest has them) take ReadChunk's path.
func (s *Store) ReadChunkInto(ctx context.Context, id ID, loc Location, buf []byte) ([]byte, error) {
	if int(loc.Length) > len(buf) || int(loc.RawLength)+ZstdSlack > len(buf) {
		return s.ReadChunk(ctx, id, loc, nil)
	}
	if loc.Codec == CodecRaw {
		blob, err := s.ReadBlob(ctx, id, loc, buf)
		if err != nil {
			return nil, err
		}
		return s.OpenBlob(id, loc, blob, nil)
	}
	bp := blobBufs.Get().(*[]byte)
	defer blobBufs.Put(bp)
	blob, err := s.ReadBlob(ctx, id, loc, *bp)
	if err != nil {
		return nil, err
	}
	*bp = blob
	return s.OpenBlob(id, loc, blob, buf)
}

// ReadBlob reads the stored blob of chunk id at loc into dst (grown when
// too small) and returns it, unchecked; OpenBlob decodes and verifies it.
func (s *Store) ReadBlob(ctx context.Context, id ID, loc Location, dst []byte) ([]byte, error) {
	if err := checkLocation(loc); err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: bad location: %w", id, loc.Pack, err)
	}
	if cap(dst) < int(loc.Length) {
		dst = make([]byte, loc.Length)
	}
	blob := dst[:loc.Length]
	if err := s.be.ReadAt(ctx, packName(loc.Pack), blob, int64(loc.Offset)); err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
	}
	return blob, nil
}

// OpenBlob decodes a blob read from loc and verifies that the bytes hash
// to id. A raw blob's bytes are returned in place (within blob); a zstd
// blob is decoded into dst (grown when it cannot hold the chunk plus
// ZstdSlack). Errors wrap ErrCorrupt and name the chunk and pack.
func (s *Store) OpenBlob(id ID, loc Location, blob, dst []byte) ([]byte, error) {
	if len(blob) < blobHeaderSize {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("blob of %d bytes is shorter than its header", len(blob)))
	}
	codec, rawLen := Codec(blob[0]), binary.LittleEndian.Uint32(blob[1:])
	if codec != loc.Codec || rawLen != loc.RawLength || rawLen > MaxChunkSize {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack,
			corruptf("blob header (codec %d, %d bytes) does not match the catalog location (%s, %d bytes)", uint8(codec), rawLen, loc.Codec, loc.RawLength))
	}
	raw := blob[blobHeaderSize:]
	switch codec {
	case CodecRaw:
		if len(raw) != int(rawLen) {
			return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("raw blob payload is %d bytes, header says %d", len(raw), rawLen))
		}
	case CodecZstd:
		if cap(dst) < int(rawLen)+ZstdSlack {
			dst = make([]byte, 0, int(rawLen)+ZstdSlack)
		}
		out, err := decoder.DecodeAll(raw, dst[:0:int(rawLen)+ZstdSlack])
		if err == nil && len(out) != int(rawLen) {
			err = corruptf("zstd blob decodes to %d bytes, header says %d", len(out), rawLen)
		} else if err != nil {
			err = corruptf("zstd blob (raw length %d): %v", rawLen, err)
		}
		if err != nil {
			return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
		}
		raw = out
	default:
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("unknown codec %d", uint8(codec)))
	}
	if got := Sum(raw); got != id {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("decoded bytes hash to %s", got))
	}
	return raw, nil
}
