//go:build ceph

package main

import (
	"fmt"
	"math/rand/v2"

	"github.com/ceph/go-ceph/rados"
	"github.com/ceph/go-ceph/rbd"
)

// rewriteRBD overwrites frac of the image in pieceSize pieces of new random
// data at random, unaligned offsets (as rewriteScattered does to a file)
// through librbd, and returns the pieces' offsets.
func rewriteRBD(e cephEnv, image string, frac float64, seed uint64) ([]int64, error) {
	conn, err := rados.NewConnWithUser(e.user)
	if err != nil {
		return nil, err
	}
	defer conn.Shutdown()
	if err := conn.ReadConfigFile(e.conf); err != nil {
		return nil, err
	}
	if err := conn.Connect(); err != nil {
		return nil, err
	}
	io, err := conn.OpenIOContext(e.pool)
	if err != nil {
		return nil, err
	}
	defer io.Destroy()
	img, err := rbd.OpenImage(io, image, rbd.NoSnapshot)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", e.spec(image), err)
	}
	defer img.Close()
	n, err := img.GetSize()
	if err != nil {
		return nil, err
	}
	size := int64(n)
	pieces := max(1, int(float64(size)*frac)/pieceSize)
	rng := rand.New(rand.NewPCG(seed, 0xd1ff))
	var key [32]byte
	key[0], key[31] = byte(seed), 0xd1
	src := rand.NewChaCha8(key)
	buf := make([]byte, pieceSize)
	offsets := make([]int64, 0, pieces)
	for range pieces {
		src.Read(buf)
		off := rng.Int64N(size - pieceSize)
		if _, err := img.WriteAt(buf, off); err != nil {
			return nil, fmt.Errorf("write %s at %d: %w", e.spec(image), off, err)
		}
		offsets = append(offsets, off)
	}
	return offsets, img.Flush()
}
