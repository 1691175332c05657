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
	"github.com/volback/volback/chunkstore/crypt"
	"github.com/volback/volback/drivers/repo"
)

// FormatVersion is the repository format version this package writes
// (docs/FORMAT.md, "Versions"). It reads all three:
//
//   - 1: unencrypted, each manifest one object;
//   - 2: encrypted (version 1 with every object sealed), manifests whole;
//   - 3: segmented manifests, encrypted or not (the config's encryption
//     field says which).
//
// New repositories are version 3. A version 1 or 2 repository keeps its
// encryption and is upgraded (its config rewritten as version 3) before
// the first segmented manifest is stored in it, so that an older volback
// refuses it with ErrVersion instead of misreading a segmented manifest.
const FormatVersion = 3

// RecordVersion is the newest backup record format_version: the repository
// format of the manifest the record names. Records naming a whole manifest
// (versions 1 and 2 repositories, sealed or not) say 1; records naming a
// segmented one say 3, so an older volback importing one refuses it.
const RecordVersion = 3

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
	segChunks  int // 0: DefaultSegmentChunks
	crypto         // keys of an encrypted repository (crypto.go)

	upgradeMu sync.Mutex // guards cfg.Version while upgrade rewrites the config
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
		s.cfg.Hash, s.cfg.Encryption = hashKeyed, opt.Encryption
		cfg = s.cfg
		if err := s.initKey(ctx, opt); err != nil {
			return nil, fmt.Errorf("initialising repository %s: %w", be.Location(), err)
		}
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
	switch {
	case cfg.Version == 1 || cfg.Version == 3 && cfg.Encryption == "":
		if cfg.Hash != hashPlain || cfg.Encryption != "" {
			return cfg, corruptf("version %d config has hash %q and encryption %q, want %q and none", cfg.Version, cfg.Hash, cfg.Encryption, hashPlain)
		}
	case cfg.Version == 2 || cfg.Version == 3:
		if cfg.Hash != hashKeyed {
			return cfg, corruptf("config hash is %q, want %q", cfg.Hash, hashKeyed)
		}
		if c, err := crypt.ParseCipher(cfg.Encryption); err != nil || c != cfg.Encryption {
			return cfg, corruptf("config encryption %q is not a cipher this volback knows (%v)", cfg.Encryption, crypt.Ciphers)
		}
	case cfg.Version < 1:
		return cfg, corruptf("config version is %d, want 1 to %d", cfg.Version, FormatVersion)
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

func (s *Store) Config() Config {
	s.upgradeMu.Lock()
	defer s.upgradeMu.Unlock()
	return s.cfg
}

// upgrade rewrites a version 1 or 2 repository's config as version 3
// (keeping its hash and encryption) before the first segmented manifest
// is stored, so that an older volback refuses the repository instead of
// misreading it. Idempotent: concurrent writers write the same config.
// Only cfg.Version changes (other fields are read without the lock).
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
		return fmt.Errorf("upgrading repository %s from format version %d to %d: writing config: %w", s.be.Location(), s.cfg.Version, FormatVersion, err)
	}
	s.cfg.Version = FormatVersion
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
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.checkLocation(loc); err != nil {
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

// OpenBlob opens (in an encrypted repository), decodes and verifies a
// blob read from loc: the bytes must hash to id with the store's ChunkID.
// A raw blob's bytes are returned in place (within blob); a zstd blob is
// decoded into dst (grown when it cannot hold the chunk plus ZstdSlack).
// Errors wrap ErrCorrupt and name the chunk and pack.
func (s *Store) OpenBlob(id ID, loc Location, blob, dst []byte) ([]byte, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	blob, err := s.openBlob(blob, id) // in place: a raw chunk stays in blob
	if err != nil {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, err)
	}
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
	if got := s.ChunkID(raw); got != id {
		return nil, fmt.Errorf("chunk %s in pack %s: %w", id, loc.Pack, corruptf("decoded bytes hash to %s", got))
	}
	return raw, nil
}
