package chunkstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/volback/volback/drivers/repo"
)

// Manifest objects (format version 3): the head at manifests/<backup-id>, the k-th stored
// segment at manifests/<backup-id>.<k as 8 hex digits>. Segments are
// written in slot order before the head, so at any moment the segments of
// a backup are a prefix k = 0..n-1 with no gaps. In an encrypted
// repository both are sealed like records (magic | envelope, the object
// name in the associated data), so a segment cannot pass for another
// backup's or another position's.

// SegmentName is the object name of the k-th stored segment of a backup's
// manifest, for messages; read and write segments through the Store.
func SegmentName(backupID string, k int) string {
	return fmt.Sprintf("%s%s.%08x", manifestsPrefix, backupID, k)
}

// PutManifest stores an encoded manifest head durably. Its segments must
// be stored first.
func (s *Store) PutManifest(ctx context.Context, backupID string, data []byte) error {
	if err := s.ready(); err != nil {
		return err
	}
	if err := s.upgrade(ctx); err != nil {
		return err
	}
	name := ManifestName(backupID)
	if err := s.be.Put(ctx, name, s.sealObject(sealedManifestMagic, name, data)); err != nil {
		return fmt.Errorf("writing manifest of backup %s: %w", backupID, err)
	}
	return nil
}

// PutSegment stores the k-th segment of a backup's manifest durably.
func (s *Store) PutSegment(ctx context.Context, backupID string, k int, data []byte) error {
	if err := s.ready(); err != nil {
		return err
	}
	if err := s.upgrade(ctx); err != nil {
		return err
	}
	name := SegmentName(backupID, k)
	if err := s.be.Put(ctx, name, s.sealObject(sealedSegmentMagic, name, data)); err != nil {
		return fmt.Errorf("writing manifest segment %d of backup %s: %w", k, backupID, err)
	}
	return nil
}

// LoadManifest reads and decodes a backup's manifest head and returns it
// with its digest. A missing manifest wraps repo.ErrNotFound, a damaged
// one ErrCorrupt.
func (s *Store) LoadManifest(ctx context.Context, backupID string) (*Manifest, ID, error) {
	if err := s.ready(); err != nil {
		return nil, ID{}, err
	}
	name := ManifestName(backupID)
	data, err := s.be.Get(ctx, name)
	if err != nil {
		return nil, ID{}, fmt.Errorf("manifest of backup %s: %w", backupID, err)
	}
	if data, err = s.openObject(sealedManifestMagic, name, data); err != nil {
		return nil, ID{}, fmt.Errorf("manifest of backup %s: %w", backupID, err)
	}
	m, digest, err := DecodeManifest(data)
	if err != nil {
		return nil, ID{}, fmt.Errorf("manifest of backup %s: %w", backupID, err)
	}
	return m, digest, nil
}

// LoadSegment reads the k-th segment of manifest m and checks it is the
// one the head names (digest, slot, size, ID count).
func (s *Store) LoadSegment(ctx context.Context, backupID string, m *Manifest, k int) (*Segment, error) {
	if m.v1 != nil {
		return m.v1, nil
	}
	ref := m.Segments[k]
	g, digest, err := s.loadSegment(ctx, backupID, k)
	if err != nil {
		return nil, err
	}
	first, n := m.SlotRange(int(ref.Slot))
	switch {
	case digest != ref.Digest:
		err = corruptf("digest %s, the manifest names %s", digest, ref.Digest)
	case g.Slot != int(ref.Slot) || len(g.Refs) != n || len(g.IDs) != int(ref.Unique):
		err = corruptf("covers slot %d (%d chunks, %d IDs), the manifest says slot %d (%d chunks, %d IDs)",
			g.Slot, len(g.Refs), len(g.IDs), ref.Slot, n, ref.Unique)
	}
	if err != nil {
		return nil, fmt.Errorf("manifest segment %s: %w", SegmentName(backupID, k), err)
	}
	g.First = first
	return g, nil
}

// loadSegment reads the k-th segment checked against its own digest only.
func (s *Store) loadSegment(ctx context.Context, backupID string, k int) (*Segment, ID, error) {
	if err := s.ready(); err != nil {
		return nil, ID{}, err
	}
	name := SegmentName(backupID, k)
	data, err := s.be.Get(ctx, name)
	if err != nil {
		return nil, ID{}, fmt.Errorf("manifest segment %s: %w", name, err)
	}
	if data, err = s.openObject(sealedSegmentMagic, name, data); err != nil {
		return nil, ID{}, fmt.Errorf("manifest segment %s: %w", name, err)
	}
	g, digest, err := DecodeSegment(data)
	if err != nil {
		return nil, ID{}, fmt.Errorf("manifest segment %s: %w", name, err)
	}
	return g, digest, nil
}

// ErrStopWalk ends WalkRefs early without an error.
var ErrStopWalk = errors.New("stop walking")

// WalkRefs calls fn with the reference list of a backup's manifest from
// position from on, one segment's part at a time (pos is the position of
// ids[0]). m is the manifest head; nil reads the stored segments without
// one, in order until the first missing, as a backup interrupted before it
// wrote its head left them. Memory is one segment, whatever the volume.
func (s *Store) WalkRefs(ctx context.Context, backupID string, m *Manifest, from int64, fn func(pos int64, ids []ID) error) error {
	return s.WalkRelRefs(ctx, backupID, m, "", nil, from, fn)
}

// WalkRelRefs is WalkRefs for a reference list relative to a base
// backup (baseID, its head bm; nil for none, which is WalkRefs): each
// segment's IDs that are not in the ID table of the base's segment for
// the same slot (all of them where the base has no segment of that slot).
// The result depends only on the two manifests, which are never
// rewritten, so every walk finds the same list. A relative part's length
// is in no head, so every segment from the first is read, with the
// base's of its slot; memory is two segments.
func (s *Store) WalkRelRefs(ctx context.Context, backupID string, m *Manifest, baseID string, bm *Manifest, from int64, fn func(pos int64, ids []ID) error) error {
	var pos int64
	for k := 0; m == nil || k < len(m.Segments); k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if m != nil && bm == nil { // the head has the part's length
			if n := int64(m.Segments[k].Unique); pos+n <= from {
				pos += n // before from: not read
				continue
			}
		}
		var g *Segment
		var err error
		if m != nil {
			g, err = s.LoadSegment(ctx, backupID, m, k)
		} else if g, _, err = s.loadSegment(ctx, backupID, k); errors.Is(err, repo.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ids := g.IDs
		if bm != nil {
			var base []ID
			if bk, ok := bm.Find(g.Slot); ok {
				bg, err := s.LoadSegment(ctx, baseID, bm, bk)
				if err != nil {
					return fmt.Errorf("base backup %s: %w", baseID, err)
				}
				base = bg.IDs
			}
			ids = RelativeIDs(ids, base)
		}
		n := int64(len(ids))
		if pos+n > from {
			skip := max(from-pos, 0)
			if err := fn(pos+skip, ids[skip:]); err != nil {
				if errors.Is(err, ErrStopWalk) {
					return nil
				}
				return err
			}
		}
		pos += n
	}
	return nil
}

// RelativeIDs returns the elements of ids that are not in base, in order.
func RelativeIDs(ids, base []ID) []ID {
	if len(base) == 0 {
		return ids
	}
	in := make(map[ID]struct{}, len(base))
	for _, id := range base {
		in[id] = struct{}{}
	}
	out := make([]ID, 0, len(ids))
	for _, id := range ids {
		if _, ok := in[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

// DeleteManifest removes a backup's manifest head, then its segments from
// the last one down (so an interrupted delete leaves a prefix, which a
// retry finds); missing objects are not an error. Delete the record first.
func (s *Store) DeleteManifest(ctx context.Context, backupID string) error {
	if err := s.deleteObject(ctx, backupID, ManifestName(backupID)); err != nil {
		return err
	}
	n := 0
	for ; ; n++ {
		_, err := s.be.Stat(ctx, SegmentName(backupID, n))
		if errors.Is(err, repo.ErrNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("deleting manifest of backup %s: %w", backupID, err)
		}
	}
	for k := n - 1; k >= 0; k-- {
		if err := s.deleteObject(ctx, backupID, SegmentName(backupID, k)); err != nil {
			return err
		}
	}
	return nil
}

// ManifestWriter stores a manifest segment by segment, in slot order,
// then its head.
type ManifestWriter struct {
	s      *Store
	backup string
	m      *Manifest
	refs   int64
}

// NewManifestWriter starts the manifest of a backup of a size-byte volume
// at the repository's chunk size.
func (s *Store) NewManifestWriter(backupID string, size int64) *ManifestWriter {
	m := NewManifest(size, s.Config().ChunkSize)
	if s.segChunks > 0 {
		m.SegmentChunks = s.segChunks
	}
	return &ManifestWriter{s: s, backup: backupID, m: m}
}

// Manifest is the head so far (segments stored until now).
func (w *ManifestWriter) Manifest() *Manifest { return w.m }

// Put stores g as the next segment, unless all its chunks are zero, and
// returns its part of the reference list (nil for a zero segment) and the
// position in the list where that part starts. Segments must come in
// ascending slot order.
func (w *ManifestWriter) Put(ctx context.Context, g *Segment) (ids []ID, pos int64, err error) {
	if n := len(w.m.Segments); n > 0 && int(w.m.Segments[n-1].Slot) >= g.Slot {
		return nil, 0, fmt.Errorf("manifest of backup %s: segment for slot %d after slot %d (a bug: report it)", w.backup, g.Slot, w.m.Segments[n-1].Slot)
	}
	if g.Empty() {
		return nil, w.refs, nil
	}
	data, digest, ids := g.Encode()
	k := len(w.m.Segments)
	if err := w.s.PutSegment(ctx, w.backup, k, data); err != nil {
		return nil, 0, err
	}
	w.m.Segments = append(w.m.Segments, SegmentRef{Slot: uint32(g.Slot), Unique: uint32(len(ids)), Digest: digest})
	pos = w.refs
	w.refs += int64(len(ids))
	return ids, pos, nil
}

// Finish stores the head and returns the manifest digest.
func (w *ManifestWriter) Finish(ctx context.Context) (ID, error) {
	data, digest := w.m.Encode()
	return digest, w.s.PutManifest(ctx, w.backup, data)
}
