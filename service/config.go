package service

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/chunkstore/crypt"
	"github.com/volback/volback/drivers/volume"
)

// ConfigName is the optional config file inside the home.
const ConfigName = "volback.toml"

// Config is volback.toml with defaults applied (docs/CLI.md).
type Config struct {
	Home             string          `toml:"-"`
	CompressionLevel int             `toml:"compression_level"`
	Workers          int             `toml:"workers"`
	ChunkSizeText    string          `toml:"chunk_size"`
	ChunkSize        int             `toml:"-"`
	DefaultZone      string          `toml:"default_availability_zone"`
	Zones            map[string]Zone `toml:"zones"`
	// GCGraceText is how old a pack no backup references must be before
	// repo-gc deletes it: a backup in another process may not have
	// committed its references yet.
	GCGraceText string        `toml:"gc_grace"`
	GCGrace     time.Duration `toml:"-"`
	// GCRepackBelow is the live share (by bytes) under which repo-gc
	// rewrites a pack; 0 never repacks.
	GCRepackBelow float64 `toml:"gc_repack_below"`
	// SegmentChunks is how many chunks each manifest segment a backup
	// writes covers (docs/FORMAT.md); 0 means the default, 16384.
	SegmentChunks int `toml:"segment_chunks"`

	// Test hooks, not in the file: pack size and lock lease.
	packSize    int
	lockOptions chunkstore.LockOptions
	// PasswordFile is the CLI's --password-file (for messages).
	PasswordFile string `toml:"-"`
	// Password is this process's own repository passphrase (from
	// --password-file or VOLBACK_PASSWORD at start): an owner such as
	// `serve` unlocks encrypted repositories with it when a call brings
	// none. Never logged, never stored.
	Password []byte `toml:"-"`
	// kdf is the argon2id cost of new keys (tests lower it); zero: the
	// default.
	kdf crypt.KDF
	// implicitZone is the default zone when volback.toml does not
	// configure it (its repository is HOME/repository until repo-init
	// binds another).
	implicitZone string
	// LogStderr: the log goes to stderr too (serve).
	LogStderr bool `toml:"-"`
	// Foreign: the config could not be read because the home belongs to
	// another user; this process can only be a client of its owner.
	Foreign bool `toml:"-"`
	// Users maps local users (by name or uid) to a project and role, for
	// calls through the socket (docs/CLI.md, "Projects").
	Users map[string]User `toml:"users"`
	// TrackingSnapshots is how many change-tracking snapshots (RBD:
	// volback.<backup-id>) are kept per volume, newest first; 0 keeps
	// none, so every incremental of such a volume reads it whole.
	TrackingSnapshots int `toml:"change_tracking_snapshots"`
	// API configures `volback serve`'s HTTP API (package api, docs/API.md).
	API APIConfig `toml:"api"`
	// ReportInterval is how often the owner checks every zone's repository
	// and records its heartbeat; ServiceDownTime is how old a heartbeat
	// may be before service-list shows the zone down (Cinder's
	// report_interval and service_down_time; heartbeat.go).
	ReportIntervalText  string        `toml:"report_interval"`
	ReportInterval      time.Duration `toml:"-"`
	ServiceDownTimeText string        `toml:"service_down_time"`
	ServiceDownTime     time.Duration `toml:"-"`
}

// APIConfig is volback.toml's [api] table.
type APIConfig struct {
	// Listen is the address serve listens on when --listen is not given;
	// "" serves the socket only.
	Listen string `toml:"listen"`
	// AuthStrategy is "noauth" (X-Auth-Token: USER:PROJECT, as Cinder's)
	// or "tokens" (TokenFile). Unset: tokens when TokenFile is set, else
	// noauth, which serve then allows on a loopback address only.
	AuthStrategy string `toml:"auth_strategy"`
	// TokenFile maps static tokens to a project and role, one per line.
	TokenFile string `toml:"token_file"`
	// Jobs is how many backups and restores the HTTP API runs at once;
	// more wait (creating) for a worker. Default 4.
	Jobs int `toml:"jobs"`
}

// Defaults of the garbage collector (docs/CLI.md).
const (
	DefaultGCGrace       = time.Hour
	DefaultGCRepackBelow = 0.5
)

// Zone maps an availability zone to the repository that serves it and to
// where its new volumes are created.
type Zone struct {
	Repository string `toml:"repository"`
	// Volumes is where the zone's new volumes (create, restores to a new
	// volume) go: a directory (image files <id>.img) or rbd://POOL[?conf=…]
	// (RBD images volume-<id>). Empty: image files under <home>/volumes.
	Volumes string `toml:"volumes"`
}

// DefaultHome is /var/lib/volback for root and $XDG_DATA_HOME/volback
// (~/.local/share/volback) for everyone else.
func DefaultHome() string {
	if os.Geteuid() == 0 {
		return "/var/lib/volback"
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "volback")
	}
	h, _ := os.UserHomeDir()
	return filepath.Join(h, ".local", "share", "volback")
}

// LoadConfig reads home/volback.toml when present and fills in defaults:
// zstd level 1, one worker per CPU, 64 KiB chunks, zone "nova" served by
// file://home/repository.
func LoadConfig(home string) (Config, error) {
	abs, err := filepath.Abs(home)
	if err != nil {
		return Config{}, fmt.Errorf("volback home %q: %v", home, err)
	}
	c := Config{Home: abs, CompressionLevel: 1, ChunkSizeText: "64K", DefaultZone: "nova",
		GCGraceText: DefaultGCGrace.String(), GCRepackBelow: DefaultGCRepackBelow, TrackingSnapshots: 2}
	path := filepath.Join(abs, ConfigName)
	md, err := toml.DecodeFile(path, &c)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case errors.Is(err, os.ErrPermission):
		c.Foreign = true
	case err != nil:
		return Config{}, fmt.Errorf("config %s: %v; fix the file (format in docs/CLI.md)", path, err)
	default:
		if un := md.Undecoded(); len(un) > 0 {
			return Config{}, fmt.Errorf("config %s: unknown key %q; see docs/CLI.md for the keys", path, un[0].String())
		}
	}
	if c.Workers <= 0 {
		c.Workers = runtime.NumCPU()
	}
	if c.CompressionLevel < 0 || c.CompressionLevel > 22 {
		return Config{}, fmt.Errorf("config %s: compression_level %d: must be 0 (none) or a zstd level 1..22", path, c.CompressionLevel)
	}
	if c.TrackingSnapshots < 0 {
		return Config{}, fmt.Errorf("config %s: change_tracking_snapshots %d: must be 0 (keep none) or more", path, c.TrackingSnapshots)
	}
	cs, err := ParseSize(c.ChunkSizeText)
	if err != nil || cs < 16<<10 || cs > 4<<20 || cs&(cs-1) != 0 {
		return Config{}, fmt.Errorf("config %s: chunk_size %q: must be a power of two from 16K to 4M", path, c.ChunkSizeText)
	}
	c.ChunkSize = int(cs)
	if c.GCGrace, err = time.ParseDuration(c.GCGraceText); err != nil || c.GCGrace < 0 {
		return Config{}, fmt.Errorf("config %s: gc_grace %q: must be a duration such as \"1h\" or \"30m\" (0 deletes unreferenced packs at once)", path, c.GCGraceText)
	}
	if c.GCRepackBelow < 0 || c.GCRepackBelow > 1 {
		return Config{}, fmt.Errorf("config %s: gc_repack_below %v: must be a live share from 0 (never repack) to 1", path, c.GCRepackBelow)
	}
	if c.SegmentChunks != 0 {
		if err := chunkstore.CheckSegmentChunks(c.SegmentChunks); err != nil {
			return Config{}, fmt.Errorf("config %s: segment_chunks: %v", path, err)
		}
	}
	if c.Zones == nil {
		c.Zones = map[string]Zone{}
	}
	if _, ok := c.Zones[c.DefaultZone]; !ok {
		c.Zones[c.DefaultZone] = Zone{Repository: "file://" + filepath.Join(abs, "repository")}
		c.implicitZone = c.DefaultZone
	}
	if err := c.checkUsers(path); err != nil {
		return Config{}, err
	}
	if err := c.API.check(path, abs); err != nil {
		return Config{}, err
	}
	if err := c.checkHeartbeat(path); err != nil {
		return Config{}, err
	}
	for name, z := range c.Zones {
		if z.Repository == "" {
			return Config{}, fmt.Errorf("config %s: zone %q has no repository URL; set repository = \"file:///path\"", path, name)
		}
		if z.Volumes != "" {
			if _, err := volume.Place(z.Volumes, "check"); err != nil {
				return Config{}, fmt.Errorf("config %s: zone %q: volumes: %v", path, name, err)
			}
		}
	}
	return c, nil
}

// Shared reports whether other local users call this home's owner (a
// [users] table), which opens its socket to them (docs/CLI.md, "Projects").
func (c Config) Shared() bool { return len(c.Users) > 0 || c.Foreign }

// ZoneNames lists the configured availability zones.
func (c Config) ZoneNames() []string {
	var names []string
	for n := range c.Zones {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ParseSize parses a byte count with an optional K, M, G or T suffix
// (powers of 1024; a trailing "B" or "iB" is allowed).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: expected a number with an optional K, M, G or T suffix", s)
	}
	return v * mult, nil
}

// check validates [api] and fills in its defaults; a relative
// token_file is in the home.
func (a *APIConfig) check(path, home string) error {
	if a.Jobs == 0 {
		a.Jobs = 4
	}
	if a.Jobs < 0 {
		return fmt.Errorf("config %s: api.jobs %d: give how many backups and restores may run at once (1 or more)", path, a.Jobs)
	}
	if a.TokenFile != "" && !filepath.IsAbs(a.TokenFile) {
		a.TokenFile = filepath.Join(home, a.TokenFile)
	}
	switch a.AuthStrategy {
	case "", "noauth": // "": tokens when token_file is set, else noauth (loopback only; package api)
	case "tokens":
		if a.TokenFile == "" {
			return fmt.Errorf("config %s: api.auth_strategy \"tokens\" needs api.token_file (lines of TOKEN PROJECT ROLE [USER])", path)
		}
	default:
		return fmt.Errorf("config %s: api.auth_strategy %q: use \"noauth\" or \"tokens\"", path, a.AuthStrategy)
	}
	return nil
}
