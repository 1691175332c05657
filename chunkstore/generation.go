package chunkstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/drivers/repo"
)

// The GC generation (docs/FORMAT.md, "GC protocol") is a small object that
// whoever moves or deletes packs rewrites with a new UUID first. Every
// catalog remembers the generation its chunk index reflects; a holder of
// the repository lock that finds another one knows that packs may have
// moved or gone and re-syncs its index before trusting it.

type generationObject struct {
	Generation string    `json:"generation"`
	WrittenAt  time.Time `json:"written_at"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Purpose    string    `json:"purpose"`
}

// Generation returns the repository's GC generation; "" when no GC has
// ever moved or deleted anything.
func (s *Store) Generation(ctx context.Context) (string, error) {
	data, err := s.be.Get(ctx, generationName)
	if errors.Is(err, repo.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the GC generation of %s: %w", s.be.Location(), err)
	}
	var g generationObject
	if err := json.Unmarshal(data, &g); err != nil || g.Generation == "" {
		return "", fmt.Errorf("GC generation object %s of %s: %w", generationName, s.be.Location(), corruptf("not a generation object"))
	}
	return g.Generation, nil
}

// NewGeneration writes a new GC generation. It requires the exclusive
// lock, still held, and must be called before anything is moved or
// deleted.
func (s *Store) NewGeneration(ctx context.Context, lk *Lock) (string, error) {
	if lk == nil || lk.s != s || !lk.exclusive {
		return "", fmt.Errorf("writing the GC generation of %s: the exclusive repository lock is required (a bug: report it)", s.be.Location())
	}
	if err := lk.Check(); err != nil {
		return "", err
	}
	me := self()
	g := generationObject{Generation: uuid.NewString(), WrittenAt: time.Now().UTC(), Host: me.Host, PID: me.PID, Purpose: lk.info.Purpose}
	data, _ := json.Marshal(g)
	if err := s.be.Put(ctx, generationName, append(data, '\n')); err != nil {
		return "", fmt.Errorf("writing the GC generation of %s: %w", s.be.Location(), err)
	}
	return g.Generation, nil
}
