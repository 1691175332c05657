package chunkstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/chunkstore/crypt"
	"github.com/volback/volback/drivers/repo"
)

// FormatVersion is the newest repository format version this package
// reads and writes: version 2 is version 1 with encryption (docs/FORMAT.md).
// An unencrypted repository is still written as version 1, so older
// volbacks keep reading it.
const FormatVersion = 2

// RecordVersion is the version of the backup record JSON (inside a sealed
// envelope in an encrypted repository, the same JSON).
const RecordVersion = 1

const configName = "config"

// Config is the repository's `config` object.
type Config struct {
	Format    string `json:"format"`
	Version   int    `json:"version"`
	ID        string `json:"id"`
	ChunkSize int    `json:"chunk_size"`
	Hash      string `json:"hash"`
	// Encryption is the cipher of a version 2 repository (crypt.Ciphers);
	// absent in version 1.
	Encryption string    `json:"encryption,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// Hash names of the config: BLAKE3-256 of the chunk (version 1), keyed
// BLAKE3-256 with the repository's id key (version 2).
const (
	hashPlain = "blake3-256"
	hashKeyed = "blake3-256-keyed"
)

// Store is an opened repository.
type Store struct {
	be         repo.Backend
	cfg        Config
	lockOpt    LockOptions
	packTarget int // 0: packTarget
	crypto         // keys of an encrypted repository (crypto.go)
}

// InitOptions say how to create a repository.
type InitOptions struct {
	ChunkSize int
	// Encryption is "" for none, else a cipher of crypt.Ciphers; the
	// repository's first key is then made from Password.
	Encryption string
	Password   []byte
	KDF        crypt.KDF // zero: crypt.DefaultKDF
}

// Init writes a new unencrypted config (refusing when one exists) and
// returns the store.
func Init(ctx context.Context, be repo.Backend, chunkSize int) (*Store, error) {
	return InitWith(ctx, be, InitOptions{ChunkSize: chunkSize})
}

// InitWith creates a repository as opt says. An encrypted one gets a
// random master key, wrapped under opt.Password in its first key object,
// which is written before the config (a config never exists without a
// key); the store returned is unlocked.
func InitWith(ctx context.Context, be repo.Backend, opt InitOptions) (*Store, error) {
	chunkSize := opt.ChunkSize
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
		Hash:      hashPlain,
		CreatedAt: time.Now().UTC().Truncate(time.Second),
	}
	s := &Store{be: be, cfg: cfg}
	if opt.Encryption != "" {
		s.cfg.Version, s.cfg.Hash, s.cfg.Encryption = 2, hashKeyed, opt.Encryption
		cfg = s.cfg
		if err := s.initKey(ctx, opt); err != nil {
			return nil, fmt.Errorf("initialising repository %s: %w", be.Location(), err)
		}
	} else {
		cfg.Version = 1
		s.cfg = cfg
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := be.Put(ctx, configName, append(data, '\n')); err != nil {
		return nil, fmt.Errorf("initialising repository %s: writing config: %w", be.Location(), err)
	}
	return s, nil
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
	switch cfg.Version {
	case 1:
		if cfg.Hash != hashPlain || cfg.Encryption != "" {
			return cfg, corruptf("version 1 config has hash %q and encryption %q, want %q and none", cfg.Hash, cfg.Encryption, hashPlain)
		}
	case 2:
		if cfg.Hash != hashKeyed {
			return cfg, corruptf("config hash is %q, want %q", cfg.Hash, hashKeyed)
		}
		if c, err := crypt.ParseCipher(cfg.Encryption); err != nil || c != cfg.Encryption {
			return cfg, corruptf("config encryption %q is not a cipher this volback knows (%v)", cfg.Encryption, crypt.Ciphers)
		}
	default:
		return cfg, fmt.Errorf("%w: the repository has format version %d and this volback reads versions 1 to %d; upgrade volback to one that supports version %d",
			ErrVersion, cfg.Version, FormatVersion, cfg.Version)
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
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.checkLocation(loc); err != nil {
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
	blob, err := s.openBlob(blob, id)
	if err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
	}
	raw, codec, err := DecodeBlob(blob, dst)
	if err == nil && (codec != loc.Codec || len(raw) != int(loc.RawLength)) {
		err = corruptf("blob (%s, %d bytes) does not match the catalog location (%s, %d bytes)", codec, len(raw), loc.Codec, loc.RawLength)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
	}
	if got := s.ChunkID(raw); got != id {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("decoded bytes hash to %s", got))
	}
	return raw, nil
}
