package chunkstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/drivers/repo"
)

// FormatVersion is the repository format version this package reads and writes.
const FormatVersion = 1

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
	if cfg.Version != FormatVersion {
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

func (s *Store) Config() Config { return s.cfg }

// SetPackSize makes packers close packs at n bytes instead of the 8 MiB
// default (tests use small packs so a few MiB of data spread over many).
// n is clamped to what readers accept.
func (s *Store) SetPackSize(n int) {
	s.packTarget = max(min(n, maxPackSize), 4<<10)
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
