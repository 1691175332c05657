package main

// Data generation: every byte the bench backs up is made here from a fixed
// seed, so two runs (and two machines) back up the same content.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
)

const (
	// stripe is the unit in which random, zero and text data alternate; 1 MiB
	// is coarse enough to keep each kind's character inside one chunk, fine
	// enough that every region of the image mixes all three.
	stripe = 1 << 20
	// pieceSize is the size of one rewritten region in W2: a database or a
	// guest page cache writes back in pieces of this order.
	pieceSize = 64 << 10
)

type stripeKind int

const (
	stripeRandom stripeKind = iota
	stripeZero
	stripeText
)

// stripeKinds returns the kind of each of n stripes: in every group of four,
// two random, one zero and one text, in a seeded order, so the mix is exactly
// half random, a quarter zeros and a quarter text whatever the size.
func stripeKinds(n int, seed uint64) []stripeKind {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	kinds := make([]stripeKind, 0, n+4)
	for len(kinds) < n {
		group := []stripeKind{stripeRandom, stripeRandom, stripeZero, stripeText}
		rng.Shuffle(len(group), func(i, j int) { group[i], group[j] = group[j], group[i] })
		kinds = append(kinds, group...)
	}
	return kinds[:n]
}

// mixedWriter produces the mixed stripe content for one seed.
type mixedWriter struct {
	rnd  *rand.ChaCha8
	text *rand.Rand
	buf  []byte
}

func newMixedWriter(seed uint64) *mixedWriter {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	return &mixedWriter{
		rnd:  rand.NewChaCha8(key),
		text: rand.New(rand.NewPCG(seed, 0x7e47)),
		buf:  make([]byte, stripe),
	}
}

// fill writes one stripe of the given kind into w.buf and returns it. Zero
// stripes are returned as real zero bytes: the caller writes them, so they
// are allocated on disk and a backup tool must read them.
func (w *mixedWriter) fill(kind stripeKind) []byte {
	switch kind {
	case stripeRandom:
		w.rnd.Read(w.buf)
	case stripeZero:
		clear(w.buf)
	case stripeText:
		fillText(w.buf, w.text)
	}
	return w.buf
}

var (
	levels   = []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
	services = []string{"api", "scheduler", "volume", "backup", "auth", "db", "cache"}
	verbs    = []string{"GET", "POST", "PUT", "DELETE"}
	objects  = []string{"volumes", "backups", "snapshots", "servers", "images", "quotas"}
	words    = []string{"request", "completed", "started", "retrying", "connection", "timeout",
		"accepted", "user", "project", "status", "available", "error", "creating", "deleted"}
)

// fillText fills buf with log-like lines: repetitive structure with varying
// numbers, so it compresses several times but no two stripes are equal.
func fillText(buf []byte, rng *rand.Rand) {
	line := make([]byte, 0, 256)
	n := 0
	for n < len(buf) {
		line = line[:0]
		line = append(line, "2026-11-25T"...)
		line = appendPad(line, rng.IntN(24))
		line = append(line, ':')
		line = appendPad(line, rng.IntN(60))
		line = append(line, ':')
		line = appendPad(line, rng.IntN(60))
		line = append(line, '.')
		line = strconv.AppendInt(line, int64(rng.IntN(1000000)), 10)
		line = append(line, "Z "...)
		line = append(line, levels[rng.IntN(len(levels))]...)
		line = append(line, " service="...)
		line = append(line, services[rng.IntN(len(services))]...)
		line = append(line, " req-"...)
		line = strconv.AppendUint(line, rng.Uint64()&0xffffffffff, 16)
		line = append(line, ' ')
		line = append(line, verbs[rng.IntN(len(verbs))]...)
		line = append(line, " /v3/"...)
		line = append(line, objects[rng.IntN(len(objects))]...)
		line = append(line, '/')
		line = strconv.AppendInt(line, int64(rng.IntN(100000)), 10)
		for range 2 + rng.IntN(5) {
			line = append(line, ' ')
			line = append(line, words[rng.IntN(len(words))]...)
		}
		line = append(line, " took="...)
		line = strconv.AppendInt(line, int64(rng.IntN(5000)), 10)
		line = append(line, "ms\n"...)
		n += copy(buf[n:], line)
	}
}

func appendPad(b []byte, v int) []byte {
	if v < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(v), 10)
}

// writeMixed writes size bytes of mixed content (size rounded up to a whole
// stripe) at off in f.
func writeMixed(f *os.File, off, size int64, seed uint64) error {
	n := int((size + stripe - 1) / stripe)
	w := newMixedWriter(seed)
	for i, kind := range stripeKinds(n, seed) {
		if _, err := f.WriteAt(w.fill(kind), off+int64(i)*stripe); err != nil {
			return fmt.Errorf("write %s at %d: %w", f.Name(), off+int64(i)*stripe, err)
		}
	}
	return nil
}

// makeImage creates path as a fully allocated image of size bytes (a whole
// number of stripes) with the mixed content of seed.
func makeImage(path string, size int64, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writeMixed(f, 0, size, seed); err != nil {
		f.Close()
		return err
	}
	return closeSynced(f)
}

// rewriteScattered overwrites frac of the image in pieceSize pieces of new
// random data at random, unaligned offsets, and returns how many bytes it
// wrote.
func rewriteScattered(path string, frac float64, seed uint64) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	size := st.Size()
	pieces := max(1, int(float64(size)*frac)/pieceSize)
	rng := rand.New(rand.NewPCG(seed, 0xd1ff))
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i)) // all of it: each round of W2 has its own seed
	}
	key[31] = 0xd1
	src := rand.NewChaCha8(key)
	buf := make([]byte, pieceSize)
	for range pieces {
		src.Read(buf)
		off := rng.Int64N(size - pieceSize)
		if _, err := f.WriteAt(buf, off); err != nil {
			f.Close()
			return 0, fmt.Errorf("rewrite %s at %d: %w", path, off, err)
		}
	}
	return int64(pieces) * pieceSize, closeSynced(f)
}

// makeSparse creates a sparse image of apparent size bytes holding data
// bytes of mixed content in `pieces` equal pieces spread evenly across it;
// everything else is a hole.
func makeSparse(path string, size, data int64, pieces int, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	piece := data / int64(pieces)
	gap := size / int64(pieces)
	for i := range pieces {
		// Each piece has its own seed: the pieces must not dedup against
		// each other or against the W1 image.
		if err := writeMixed(f, int64(i)*gap, piece, seed+uint64(i)); err != nil {
			f.Close()
			return err
		}
	}
	return closeSynced(f)
}

func closeSynced(f *os.File) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	return f.Close()
}

// fileSHA256 hashes a whole file (holes read as zeros).
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
