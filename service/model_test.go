package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/chunkstore/crypt"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/repo/mem"
	"github.com/volback/volback/index"
)

// The model-based test: seeded random sequences of writes to image files,
// full and incremental backups, deletes, garbage collections (repacking
// forced often), restores, repairs and catalog rebuilds, by one home or by
// two homes sharing one repository directory, are checked against a model
// of what every backup must restore to. After every step repo-check
// --read-data must be clean in each home and every available backup must
// restore byte-exact.
//
// Writes copy chunk-aligned runs of the other home's data, of the home's
// other volume and of backups, so that the homes' catalogs hold copies of
// the same chunks in each other's packs: each home's GC then judges packs
// the other one needs, and its syncs must find moved chunks. Manifests
// have segments of 4 chunks (several per volume). A seed replays exactly:
// one pipeline worker, and ops pick backups by creation order.
//
//	VOLBACK_MODEL_BUDGET=10m  run seeds for this long (default 60s; make soak: 30m)
//	VOLBACK_MODEL_SEED=1234   run this seed only (prints its steps)
//	VOLBACK_MODEL_STEPS=60    steps per sequence (default 40)
//
// A failure prints the seed and the shortest failing sequence found by
// deleting steps.
//
// Incrementals count their references against their parent (RefsBase),
// so ops also: try to delete a parent (refused), reset a child to error
// (its parent's delete is then refused while the child still counts),
// import a child without its parent, and crash a process (a child test
// process killed at the refs failpoints, then restarted: recovery) during
// an incremental or a delete. After every step the catalog's references
// must equal an independent recount from the manifests (checkRefs).

type modelOp struct {
	kind    string
	home    int
	vol     int
	a, b, c uint64
}

func (o modelOp) String() string {
	return fmt.Sprintf("%s(home=%d vol=%d %d %d %d)", o.kind, o.home, o.vol, o.a, o.b, o.c)
}

const (
	modelChunk    = 16 << 10
	modelMaxSize  = 320 << 10
	modelVolumes  = 2
	modelPackSize = 48 << 10
	// modelSegmentChunks is the format's smallest segment (segment_chunks).
	modelSegmentChunks = 4
)

// genOps makes a sequence from seed. Ops name things by index modulo what
// exists when they run, so any subsequence is still a valid sequence.
func genOps(seed uint64, steps int) []modelOp {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	twoHomes := seed%3 != 0
	ops := make([]modelOp, 0, steps)
	for range steps {
		o := modelOp{vol: r.IntN(modelVolumes), a: r.Uint64(), b: r.Uint64(), c: r.Uint64()}
		if twoHomes && r.IntN(2) == 0 {
			o.home = 1
		}
		switch n := r.IntN(100); {
		case n < 28:
			o.kind = "write"
		case n < 38:
			o.kind = "backup"
		case n < 50:
			o.kind = "incremental"
		case n < 56:
			o.kind = "dedup"
		case n < 66:
			o.kind = "delete"
		case n < 70:
			o.kind = "import"
		case n < 88:
			o.kind = "gc"
		case n < 92:
			o.kind = "repair"
		case n < 96:
			o.kind = "rebuild"
		default:
			o.kind = "restore-over"
		}
		ops = append(ops, o)
	}
	return ops
}

type modelBackup struct {
	id     string
	seq    int // creation order: ids are random, so ops pick by this
	home   int
	shared bool // imported into the other home too
	volID  string
	parent string
	data   []byte
}

type modelHome struct {
	s     *Service
	cfg   Config
	vols  [modelVolumes]string // volume ids
	paths [modelVolumes]string
	data  [modelVolumes][]byte
	gen   int // bumps on every rebuild (volume names)
}

type world struct {
	t       testing.TB
	seed    uint64
	dir     string
	cleanup func() // of the repository
	homes   [2]*modelHome
	backups map[string]*modelBackup
	errored map[string]*modelBackup // reset to error by the model, not deleted yet
	made    int                     // backups created
}

// modelRepository picks the repository a seed runs on: half the seeds a
// directory (lock objects), half an in-memory repository shared by both
// homes (the native lease lock, as RADOS has). The Ceph build replaces it
// in its own test.
var modelRepository = func(seed uint64, dir string) (url string, cleanup func()) {
	if seed%2 == 1 {
		name := filepath.Base(dir)
		return "mem://" + name, func() { mem.Remove(name) }
	}
	return "file://" + filepath.Join(dir, "repo"), func() {}
}

// modelEncryption is the cipher of the repository a seed runs on ("" =
// unencrypted); TestModelEncrypted sets it.
var modelEncryption = func(seed uint64) string { return "" }

// testKDF keeps the unlocks of tests cheap.
var testKDF = crypt.KDF{Time: 1, MemoryKiB: 64, Threads: 1}

func newWorld(t testing.TB, seed uint64) (*world, error) {
	dir, err := os.MkdirTemp("", "vbmodel-")
	if err != nil {
		return nil, err
	}
	w := &world{t: t, seed: seed, dir: dir, backups: map[string]*modelBackup{}, errored: map[string]*modelBackup{}}
	repoURL, cleanup := modelRepository(seed, dir)
	w.cleanup = cleanup
	cipher := modelEncryption(seed)
	if cipher != "" {
		// Both homes find the repository encrypted and unlock it with
		// their owner's passphrase.
		be, err := repo.Open(context.Background(), repoURL, true)
		if err != nil {
			return w, err
		}
		_, err = chunkstore.InitWith(context.Background(), be, chunkstore.InitOptions{ChunkSize: modelChunk,
			Encryption: cipher, Password: []byte("model"), KDF: testKDF})
		be.Close()
		if err != nil {
			return w, err
		}
	}
	for h := range w.homes {
		home := filepath.Join(dir, fmt.Sprint("home", h))
		os.MkdirAll(home, 0o700)
		conf := fmt.Sprintf("chunk_size = \"16K\"\nworkers = 1\nsegment_chunks = %d\n[zones.nova]\nrepository = %q\n", modelSegmentChunks, repoURL)
		if err := os.WriteFile(filepath.Join(home, ConfigName), []byte(conf), 0o600); err != nil {
			return w, err
		}
		cfg, err := LoadConfig(home)
		if err != nil {
			return w, err
		}
		cfg.packSize = modelPackSize
		if seed/6%2 == 1 {
			// Half the seeds keep a backup's chunks in one pack, as
			// volback's default size does: a home that learns of one of
			// the other home's packs then knows many of its chunks' homes.
			cfg.packSize = 1 << 20
		}
		if cipher != "" {
			cfg.Password, cfg.kdf = []byte("model"), testKDF
		}
		mh := &modelHome{cfg: cfg}
		w.homes[h] = mh
		if mh.s, err = Open(context.Background(), cfg, nil); err != nil {
			return w, err
		}
		if err := unlimitedQuota(mh.s); err != nil {
			return w, err
		}
		r := rand.New(rand.NewPCG(seed, uint64(h)))
		for v := range modelVolumes {
			mh.paths[v] = filepath.Join(home, fmt.Sprintf("vol%d.img", v))
			mh.data[v] = randBytes(r, sectors(64<<10+r.IntN(128<<10)))
			if err := os.WriteFile(mh.paths[v], mh.data[v], 0o600); err != nil {
				return w, err
			}
			if err := w.manage(h, v); err != nil {
				return w, err
			}
		}
	}
	if cipher != "" {
		r, err := w.homes[0].s.repoFor(context.Background(), "nova")
		if err != nil {
			return w, err
		}
		if c := r.store.Config(); c.Encryption != cipher || !r.store.Unlocked() {
			return w, fmt.Errorf("the model's repository has encryption %q (unlocked %v), want %s", c.Encryption, r.store.Unlocked(), cipher)
		}
	}
	return w, nil
}

// unlimitedQuota lifts the project's backup quota: the model keeps more
// than Cinder's default 10 backups, and quotas have tests of their own.
func unlimitedQuota(s *Service) error {
	unlimited := int64(-1)
	_, err := s.UpdateQuota(context.Background(), QuotaRequest{Project: DefaultProject, Backups: &unlimited, BackupGigabytes: &unlimited})
	return err
}

func (w *world) close() {
	for _, h := range w.homes {
		if h != nil && h.s != nil {
			h.s.Close()
		}
	}
	if w.cleanup != nil {
		w.cleanup()
	}
	os.RemoveAll(w.dir)
}

func (w *world) manage(h, v int) error {
	mh := w.homes[h]
	vv, err := mh.s.Manage(context.Background(), ManageRequest{Name: fmt.Sprintf("h%dv%d-%d", h, v, mh.gen), Source: mh.paths[v]})
	if err != nil {
		return err
	}
	mh.vols[v] = vv.ID
	return nil
}

// copyChunks copies a chunk-aligned run of src into d, so that the copied
// chunks dedup against src's: a few chunks or up to all of them, half the
// time at the same offset (a clone diverging), else at another one.
func copyChunks(r *rand.Rand, d, src []byte) {
	n := (1 + r.IntN(4)) * modelChunk
	if r.IntN(3) == 0 {
		n = (1 + r.IntN(len(src)/modelChunk+1)) * modelChunk
	}
	from := r.IntN(len(src)/modelChunk+1) * modelChunk
	to := from
	if r.IntN(2) == 0 {
		to = r.IntN(len(d)/modelChunk+1) * modelChunk
	}
	if from < len(src) && to < len(d) {
		copy(d[to:], src[from:min(len(src), from+n)])
	}
}

// sectors rounds n up to whole 512-byte sectors.
func sectors(n int) int { return (n + 511) &^ 511 }

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// liveBackups are the model's backups home h holds, oldest first (sorting by
// id would make what a seed's ops pick vary from run to run).
func (w *world) liveBackups(h int) []*modelBackup {
	var out []*modelBackup
	for _, b := range w.backups {
		if b.home == h || b.shared {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func (w *world) step(op modelOp) error {
	ctx := context.Background()
	mh := w.homes[op.home]
	s := mh.s
	r := rand.New(rand.NewPCG(op.a, op.b))
	switch op.kind {
	case "write":
		d := mh.data[op.vol]
		switch op.c % 10 {
		case 0, 1: // random bytes
			off := r.IntN(len(d))
			n := min(1+r.IntN(3*modelChunk), len(d)-off)
			copy(d[off:], randBytes(r, n))
		case 2: // zeros
			off := r.IntN(len(d))
			clear(d[off:min(len(d), off+r.IntN(3*modelChunk)+1)])
		case 3, 4, 5: // the other home's data: dedup across homes, whose GCs then
			// judge packs holding each other's copies
			other := 1 - op.home
			src := w.homes[other].data[r.IntN(modelVolumes)]
			if bs := w.liveBackups(other); len(bs) > 0 && r.IntN(3) > 0 {
				src = bs[r.IntN(len(bs))].data
			}
			copyChunks(r, d, src)
		case 6: // the home's other volume
			copyChunks(r, d, mh.data[(op.vol+1)%modelVolumes])
		case 7: // any backup's data: dedup across time
			if bs := w.liveBackups(r.IntN(2)); len(bs) > 0 {
				copyChunks(r, d, bs[r.IntN(len(bs))].data)
			}
		case 8: // grow (volumes are whole 512-byte sectors)
			if len(d) < modelMaxSize {
				d = append(d, randBytes(r, sectors(1+r.IntN(2*modelChunk)))...)
			}
		case 9: // shrink
			if len(d) > 2*modelChunk {
				d = d[:sectors(len(d)/2+r.IntN(len(d)/2))]
			}
		}
		mh.data[op.vol] = d
		return os.WriteFile(mh.paths[op.vol], d, 0o600)
	case "dedup":
		// A backup whose new chunks are all the other home's: back the
		// volume up, copy chunks of the other home's into it, back it up
		// again. The other home's GC finds the pack of the second backup
		// wholly stored elsewhere and deletes it; this home's sync must
		// then find its chunks in the other home's packs.
		for _, kind := range []string{"backup", "copy", "incremental"} {
			o := op
			o.kind, o.c = kind, 3
			if kind == "copy" {
				o.kind = "write"
			}
			if err := w.step(o); err != nil {
				return fmt.Errorf("%s: %w", kind, err)
			}
		}
	case "import":
		// backup-export in the other home, backup-import here, parents
		// first: both catalogs count the chunks, each GC judges the packs
		// the other wrote as its own, and either may repack them.
		var bs []*modelBackup
		if theirs := w.liveBackups(1 - op.home); len(theirs) > 0 {
			for b := theirs[int(op.a%uint64(len(theirs)))]; b != nil; b = w.backups[b.parent] {
				bs = append([]*modelBackup{b}, bs...)
				if op.c>>8%3 == 1 {
					break // the child alone: its parent comes later, if ever
				}
			}
		}
		for _, b := range bs {
			if b.shared || b.home == op.home {
				continue // a parent of a child imported alone is there already
			}
			ex, err := w.homes[b.home].s.ExportBackup(ctx, b.id)
			if err != nil {
				return err
			}
			if _, err := s.ImportBackup(ctx, ImportRequest{BackupService: ex.BackupService, BackupURL: ex.BackupURL}); err != nil {
				return fmt.Errorf("importing %s: %w", b.id, err)
			}
			b.shared = true
		}
	case "backup", "incremental":
		incr := op.kind == "incremental"
		hasParent := false
		for _, b := range w.liveBackups(op.home) {
			hasParent = hasParent || b.volID == mh.vols[op.vol]
		}
		if incr && hasParent && op.c>>16%4 == 1 && w.canCrash() {
			id, err := w.crash(op.home, modelChild{Op: "incremental", Volume: mh.vols[op.vol]}, "backup.refs-batch", 1+int(op.c>>20%3))
			if err != nil || id == "" {
				return err // killed: recovery rolled it back to error
			}
			bv, err := w.homes[op.home].s.ShowBackup(ctx, id)
			if err != nil {
				return err
			}
			w.made++
			b := &modelBackup{id: id, seq: w.made, home: op.home, volID: mh.vols[op.vol], parent: *bv.ParentID, data: bytes.Clone(mh.data[op.vol])}
			w.backups[id] = b
			return nil
		}
		bv, err := s.CreateBackup(ctx, BackupRequest{Volume: mh.vols[op.vol], Incremental: incr}, nil)
		if incr && !hasParent {
			if err == nil || !strings.Contains(err.Error(), "no available backup") {
				return fmt.Errorf("incremental without a parent: %v, want a refusal", err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if bv.Status != index.StatusAvailable {
			return fmt.Errorf("backup %s is %s", bv.ID, bv.Status)
		}
		// The volumes are 4 to 20 chunks: segments of 4 give most
		// manifests several, some shared with the parent, some changed.
		rp, err := s.repoFor(ctx, "nova")
		if err != nil {
			return err
		}
		m, _, err := rp.store.LoadManifest(ctx, bv.ID)
		if err != nil {
			return err
		}
		if m.SegmentChunks != modelSegmentChunks {
			return fmt.Errorf("backup %s: segments of %d chunks, want %d", bv.ID, m.SegmentChunks, modelSegmentChunks)
		}
		w.made++
		b := &modelBackup{id: bv.ID, seq: w.made, home: op.home, volID: mh.vols[op.vol], data: bytes.Clone(mh.data[op.vol])}
		if bv.ParentID != nil {
			b.parent = *bv.ParentID
		}
		w.backups[b.id] = b
		if incr && op.c>>8%5 == 1 {
			// An error child (backup-reset-state): it keeps what it
			// counts, so its parent's delete must wait for it.
			if _, err := s.ResetBackupState(ctx, ResetStateRequest{Ref: b.id, State: index.StatusError}); err != nil {
				return err
			}
			delete(w.backups, b.id)
			w.errored[b.id] = b
		}
	case "delete":
		if err := w.deleteParent(op); err != nil {
			return err
		}
		if errored := w.erroredOf(op.home); op.c>>8%4 == 2 && len(errored) > 0 {
			b := errored[0]
			if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.id}}); err != nil {
				return fmt.Errorf("deleting error backup %s: %w", b.id, err)
			}
			delete(w.errored, b.id)
			return nil
		}
		var cands []*modelBackup
		for _, b := range w.liveBackups(op.home) {
			if b.shared {
				continue // deleting it would take it from the other home too
			}
			child := false
			for _, o := range w.backups {
				child = child || o.parent == b.id
			}
			if !child {
				cands = append(cands, b)
			}
		}
		if len(cands) == 0 {
			return nil
		}
		b := cands[int(op.a%uint64(len(cands)))]
		erroredChild := false
		for _, e := range w.errored {
			erroredChild = erroredChild || e.parent == b.id
		}
		if op.c>>16%4 == 1 && w.canCrash() && !erroredChild {
			if _, err := w.crash(op.home, modelChild{Op: "delete", Backup: b.id}, "refs.release-batch", 1+int(op.c>>20%3)); err != nil {
				return err
			}
			delete(w.backups, b.id) // finished by recovery if not before
			return nil
		}
		_, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.id}, Force: op.c%4 == 0})
		// An error child counts against it: the fix the message names is
		// deleting that child first. Each refusal names one child, and a
		// backup may have several (every incremental made while the
		// first was in error took the same parent).
		for err != nil && strings.Contains(err.Error(), "still counts its chunk references") {
			var named *modelBackup
			for _, e := range w.errored {
				if e.parent == b.id && strings.Contains(err.Error(), e.id) {
					named = e
				}
			}
			if named == nil {
				break // not a child the model made in error: a bug
			}
			if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{named.id}}); err != nil {
				return fmt.Errorf("deleting error child %s: %w", named.id, err)
			}
			delete(w.errored, named.id)
			modelStats.refusedForError++
			_, err = s.DeleteBackups(ctx, DeleteRequest{Refs: []string{b.id}, Force: op.c%4 == 0})
		}
		if err != nil {
			return err
		}
		delete(w.backups, b.id)
	case "gc":
		req := GCRequest{Grace: "0"}
		switch op.c % 4 {
		case 1:
			v := 0.95
			req.RepackBelow = &v
		case 2:
			v := 1.0
			req.RepackBelow = &v
		case 3:
			req.Grace = "" // the default hour: no orphan is old enough
		}
		if _, err := s.GC(ctx, req); err != nil {
			return err
		}
	case "repair":
		reps, err := s.Repair(ctx, RepairRequest{ReadData: op.c%2 == 0})
		if err != nil {
			return err
		}
		for _, rp := range reps {
			if rp.ChunksLost+rp.ChunksRelocated+rp.RefsFixed > 0 || len(rp.Damaged) > 0 || len(rp.Problems) > 0 {
				return fmt.Errorf("repo-repair of a healthy repository changed or found something: %+v", rp)
			}
		}
	case "rebuild":
		// Only a home whose backups are its own can rebuild: a rebuilt
		// catalog imports every record in the repository.
		if op.home != 0 || len(w.liveBackups(1)) > 0 || len(w.erroredOf(1)) > 0 {
			return nil
		}
		cfg := mh.cfg
		s.Close()
		mh.s = nil
		if err := os.RemoveAll(filepath.Join(cfg.Home, "catalog")); err != nil {
			return err
		}
		ns, err := Open(ctx, cfg, nil)
		if err != nil {
			return err
		}
		mh.s = ns
		if err := unlimitedQuota(ns); err != nil {
			return err
		}
		rep, err := ns.RebuildCatalog(ctx, RebuildRequest{})
		if err != nil {
			return err
		}
		// Backups reset to error kept their records: they come back.
		for id, b := range w.errored {
			if b.home == 0 {
				w.backups[id] = b
				delete(w.errored, id)
			}
		}
		if len(rep.Skipped) > 0 || rep.BackupsImported != len(w.liveBackups(0)) {
			return fmt.Errorf("catalog-rebuild: %+v, want %d backups imported", rep, len(w.liveBackups(0)))
		}
		mh.gen++
		for v := range modelVolumes {
			if err := w.manage(0, v); err != nil {
				return err
			}
		}
	case "restore-over":
		bs := w.liveBackups(op.home)
		if len(bs) == 0 {
			return nil
		}
		b := bs[int(op.a%uint64(len(bs)))]
		if !w.restorable(op.home, b) {
			return nil
		}
		if int64(len(b.data)) > int64(len(mh.data[op.vol])) {
			return nil // the volume is too small: refused, tested elsewhere
		}
		if _, err := s.Restore(ctx, RestoreRequest{Backup: b.id, Volume: mh.vols[op.vol]}, nil); err != nil {
			if strings.Contains(err.Error(), "smaller than backup") {
				return nil // the catalog knows the volume's size as of its last backup
			}
			return err
		}
		copy(mh.data[op.vol], b.data)
		got, err := os.ReadFile(mh.paths[op.vol])
		if err != nil {
			return err
		}
		if !bytes.Equal(got, mh.data[op.vol]) {
			return fmt.Errorf("restore of %s over volume %d: contents differ", b.id, op.vol)
		}
	default:
		return fmt.Errorf("unknown op %q", op.kind)
	}
	return nil
}

// verify: repo-check --read-data clean in each home, the references
// recounted independently (checkRefs), and every backup of the model
// available and byte-exact.
func (w *world) verify() error {
	ctx := context.Background()
	for h, mh := range w.homes {
		if err := checkRefs(mh.s); err != nil {
			return fmt.Errorf("home %d: %w", h, err)
		}
		reps, err := mh.s.Check(ctx, CheckRequest{ReadData: true})
		if err != nil {
			return fmt.Errorf("home %d: repo-check: %w", h, err)
		}
		for _, rp := range reps {
			if len(rp.Problems) > 0 {
				return fmt.Errorf("home %d: repo-check: %s", h, strings.Join(rp.Problems, "; "))
			}
		}
		bs, err := mh.s.ListBackups(ctx, "", false)
		if err != nil {
			return err
		}
		listed := map[string]string{}
		for _, b := range bs {
			listed[b.ID] = b.Status
		}
		for _, b := range w.liveBackups(h) {
			if listed[b.id] != index.StatusAvailable {
				return fmt.Errorf("home %d: backup %s is %q, want available", h, b.id, listed[b.id])
			}
			delete(listed, b.id)
			if !w.restorable(h, b) {
				continue
			}
			got, err := restoreAll(mh.s, b.id)
			if err != nil {
				return fmt.Errorf("home %d: restore of %s: %w", h, b.id, err)
			}
			if !bytes.Equal(got, b.data) {
				return fmt.Errorf("home %d: backup %s restores %d bytes that differ from the %d the model holds", h, b.id, len(got), len(b.data))
			}
		}
		for id, st := range listed {
			if st != index.StatusError {
				return fmt.Errorf("home %d: backup %s is %s but the model has no such backup", h, id, st)
			}
		}
	}
	return nil
}

func restoreAll(s *Service, id string) ([]byte, error) {
	ctx := context.Background()
	rv, err := s.Restore(ctx, RestoreRequest{Backup: id}, nil)
	if err != nil {
		return nil, err
	}
	v, err := s.ShowVolume(ctx, rv.VolumeID)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(v.Path)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	_, err = s.DeleteVolume(ctx, rv.VolumeID)
	return b, err
}

// runModel runs ops from a fresh world; it returns the index of the
// failing step (or -1) and the failure.
func runModel(t testing.TB, seed uint64, ops []modelOp) (int, error) {
	w, err := newWorld(t, seed)
	defer w.close()
	if err != nil {
		return -1, fmt.Errorf("setting up: %w", err)
	}
	for i, op := range ops {
		if err := w.step(op); err != nil {
			return i, fmt.Errorf("step %d %s: %w", i, op, err)
		}
		if err := w.verify(); err != nil {
			return i, fmt.Errorf("after step %d %s: %w", i, op, err)
		}
	}
	return -1, nil
}

// shrink deletes steps while the sequence still fails, within budget.
func shrink(t testing.TB, seed uint64, ops []modelOp, failAt int, budget time.Duration) ([]modelOp, error) {
	ops = ops[:failAt+1]
	_, last := runModel(t, seed, ops)
	deadline := time.Now().Add(budget)
	for changed := true; changed && time.Now().Before(deadline); {
		changed = false
		for i := len(ops) - 2; i >= 0 && time.Now().Before(deadline); i-- {
			try := append(append([]modelOp{}, ops[:i]...), ops[i+1:]...)
			if at, err := runModel(t, seed, try); err != nil {
				ops, last, changed = try[:at+1], err, true
				i = min(i, len(ops)-1)
			}
		}
	}
	return ops, last
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestModel(t *testing.T) { modelSeeds(t, 60*time.Second, modelRegressionSeeds...) }

// modelRegressionSeeds failed once, each for a bug of its own (the
// regression seeds of TestModelThroughBinary are another list). A seed
// replays only with the default VOLBACK_MODEL_STEPS.
var modelRegressionSeeds = []uint64{
	// Home 0's GC deleted, as stored elsewhere, a pack of home 1's whose
	// chunks home 0 keeps in a pack home 1 knows for other chunks; home
	// 1's sync looked for them only in packs it did not know, and marked
	// them lost (the bug of seed 1796086804170133338 of
	// TestModelThroughBinary, found here with the second pass of
	// reconcile taken out).
	1796092253167894435,
}

// TestModelEncrypted runs the model on encrypted repositories (both
// ciphers): keyed chunk ids, sealed packs, trailers, manifests and records
// under every delete, GC, repack, repair and rebuild.
func TestModelEncrypted(t *testing.T) {
	saved := modelEncryption
	defer func() { modelEncryption = saved }()
	modelEncryption = func(seed uint64) string { return crypt.Ciphers[seed%2] }
	// A backup with two incrementals in error: the model deleted one
	// child, then failed on the refusal naming the other.
	modelSeeds(t, 20*time.Second, 1796200058243389428)
}

// modelSeeds runs the regression seeds, then random seeds for budget (or
// VOLBACK_MODEL_BUDGET); VOLBACK_MODEL_SEED runs that seed only.
func modelSeeds(t *testing.T, budget time.Duration, regression ...uint64) {
	if testing.Short() {
		t.Skip("model-based test skipped in -short mode")
	}
	steps := envInt("VOLBACK_MODEL_STEPS", 40)
	if v, err := time.ParseDuration(os.Getenv("VOLBACK_MODEL_BUDGET")); err == nil {
		budget = v
	}
	seeds, only := regression, false
	if v, err := strconv.ParseUint(os.Getenv("VOLBACK_MODEL_SEED"), 10, 64); err == nil {
		seeds, only = []uint64{v}, true
	}
	start := time.Now()
	base := uint64(time.Now().UnixNano())
	ran := 0
	for i := 0; ; i++ {
		seed := base + uint64(i)
		if i < len(seeds) {
			seed = seeds[i]
		} else if only || time.Since(start) > budget {
			break
		}
		ops := genOps(seed, steps)
		at, err := runModel(t, seed, ops)
		ran++
		if err == nil {
			continue
		}
		took := time.Since(start).Round(time.Second)
		min, last := shrink(t, seed, ops, at, 2*time.Minute)
		var b strings.Builder
		for i, op := range min {
			fmt.Fprintf(&b, "\n  %2d %s", i, op)
		}
		t.Fatalf("seed %d (the %d. of this run, after %v) fails: %v\nshortest failing sequence found (%d of %d steps; rerun with VOLBACK_MODEL_SEED=%d):%s\nits failure: %v",
			seed, ran, took, err, len(min), at+1, seed, b.String(), last)
	}
	t.Logf("%d seeds of %d steps passed in %v; %d checks of relative backups, %d crashes, %d parent deletes refused for an error child",
		ran, steps, time.Since(start).Round(time.Millisecond), modelStats.relative, modelStats.crashes, modelStats.refusedForError)
	if ran == 0 {
		t.Fatal("no seed ran")
	}
}

// restorable: a backup imported without its parent is refused until
// the parent is imported too.
func (w *world) restorable(h int, b *modelBackup) bool {
	for ; b.parent != ""; b = w.backups[b.parent] {
		if p := w.backups[b.parent]; p == nil || (p.home != h && !p.shared) {
			return false
		}
	}
	return true
}

// erroredOf are the backups home h reset to error, oldest first.
func (w *world) erroredOf(h int) []*modelBackup {
	var out []*modelBackup
	for _, b := range w.errored {
		if b.home == h {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// deleteParent tries to delete a backup of home op.home that has a live
// incremental: refused, and nothing changes.
func (w *world) deleteParent(op modelOp) error {
	if op.c>>8%4 != 1 {
		return nil
	}
	for _, b := range w.liveBackups(op.home) {
		child := ""
		for _, o := range w.liveBackups(op.home) {
			if o.parent == b.id {
				child = o.id
			}
		}
		if child == "" || b.shared {
			continue
		}
		_, err := w.homes[op.home].s.DeleteBackups(context.Background(), DeleteRequest{Refs: []string{b.id}, Force: op.c%4 == 0})
		if err == nil || !strings.Contains(err.Error(), "Incremental backups exist") && !strings.Contains(err.Error(), "still counts its chunk references") {
			return fmt.Errorf("deleting backup %s with incremental %s: %v, want a refusal", b.id, child, err)
		}
		return nil
	}
	return nil
}

// checkRefs recounts home s's references from the manifests, apart from
// the service's code: a backup counts its manifest's whole reference
// list, or (RefsBase) each segment's IDs not in its base's segment of the
// same slot; every catalog entry must equal that. Every backup must be
// fully counted or not at all (the model never leaves one half-done), a
// base must be fully counted, and every chunk of a counted or available
// backup's manifest must have references (the invariant relative
// counting keeps: the backup's or its bases').
func checkRefs(s *Service) error {
	ctx := context.Background()
	r, err := s.repoFor(ctx, "nova")
	if err != nil {
		return err
	}
	var all []*index.Backup
	if err := s.cat.View(func(tx *index.Tx) (err error) { all, err = tx.Backups(); return err }); err != nil {
		return err
	}
	byID := map[string]*index.Backup{}
	for _, b := range all {
		byID[b.ID] = b
	}
	segments := func(id string) (map[int][]chunkstore.ID, error) {
		m, _, err := r.store.LoadManifest(ctx, id)
		if err != nil {
			return nil, err
		}
		out := map[int][]chunkstore.ID{}
		for k, ref := range m.Segments {
			g, err := r.store.LoadSegment(ctx, id, m, k)
			if err != nil {
				return nil, err
			}
			out[int(ref.Slot)] = g.IDs
		}
		return out, nil
	}
	want := map[chunkstore.ID]uint32{}
	need := map[chunkstore.ID]string{} // chunk -> a backup whose manifest has it
	for _, b := range all {
		if b.RefsApplied == 0 && b.Status != index.StatusAvailable {
			continue
		}
		if !b.FullyCounted() {
			return fmt.Errorf("backup %s (%s) counts %d of %d references (%d released)", b.ID, b.Status, b.RefsApplied, b.RefsLen(), b.RefsReleased)
		}
		segs, err := segments(b.ID)
		if err != nil {
			return err
		}
		var base map[int][]chunkstore.ID
		if b.RefsBase != "" {
			modelStats.relative++
			p := byID[b.RefsBase]
			if p == nil || !p.FullyCounted() || p.Status != index.StatusAvailable || p.ID != b.ParentID {
				return fmt.Errorf("backup %s counts against %s, which is %+v", b.ID, b.RefsBase, p)
			}
			if base, err = segments(p.ID); err != nil {
				return err
			}
		}
		n := 0
		for slot, ids := range segs {
			in := map[chunkstore.ID]bool{}
			for _, id := range base[slot] {
				in[id] = true
			}
			for _, id := range ids {
				need[id] = b.ID
				if !in[id] {
					want[id]++
					n++
				}
			}
		}
		if n != b.RefsApplied {
			return fmt.Errorf("backup %s (base %q) counts %d references, its manifest's list has %d", b.ID, b.RefsBase, b.RefsApplied, n)
		}
	}
	got := map[chunkstore.ID]uint32{}
	err = s.cat.View(func(tx *index.Tx) error {
		return tx.Chunks(r.id, func(id chunkstore.ID, c index.Chunk) error {
			if c.Refs > 0 {
				got[id] = c.Refs
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for id, b := range need {
		if got[id] == 0 {
			return fmt.Errorf("chunk %s of backup %s has no reference", id, b)
		}
	}
	for id, n := range want {
		if got[id] != n {
			return fmt.Errorf("chunk %s: the catalog counts %d references, the manifests %d", id, got[id], n)
		}
	}
	for id, n := range got {
		if want[id] == 0 {
			return fmt.Errorf("chunk %s: the catalog counts %d references, no manifest any", id, n)
		}
	}
	return nil
}

// modelStats says how much the relative counting was exercised.
var modelStats struct{ relative, crashes, refusedForError int }

// modelChild is what a child process of the model does in a home: one
// op, killed at a failpoint or not.
type modelChild struct {
	Home      string
	PackSize  int
	Encrypted bool
	Op        string // incremental, delete
	Volume    string
	Backup    string
	Result    string // file the created backup's id is written to
}

// canCrash: a child process can only reach a directory repository.
func (w *world) canCrash() bool { return w.seed%2 == 0 && !testing.Short() }

// crash runs op in a child process of this test binary that is killed
// at the n-th hit of failpoint point (if it gets there), then restarts
// home h (recovery resolves what the child left). It returns the backup
// the child created, "" if it was killed first.
func (w *world) crash(h int, c modelChild, point string, n int) (string, error) {
	mh := w.homes[h]
	c.Home, c.PackSize, c.Encrypted = mh.cfg.Home, mh.cfg.packSize, mh.cfg.Password != nil
	c.Result = filepath.Join(w.dir, "child-result")
	os.Remove(c.Result)
	js, _ := json.Marshal(c)
	mh.s.Close()
	mh.s = nil
	cmd := exec.Command(os.Args[0], "-test.run=^TestModelChild$")
	cmd.Env = append(os.Environ(), "VOLBACK_MODEL_CHILD="+string(js), fmt.Sprintf("VOLBACK_FAILPOINT=%s:%d", point, n))
	out, err := cmd.CombinedOutput()
	killed := false
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			killed, err = true, nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("child process (%s): %v\n%s", c.Op, err, out)
	}
	ns, err := Open(context.Background(), mh.cfg, nil)
	if err != nil {
		return "", fmt.Errorf("restarting after the child: %w", err)
	}
	mh.s = ns
	if killed {
		modelStats.crashes++
		return "", nil
	}
	id, err := os.ReadFile(c.Result)
	return string(id), err
}

// TestModelChild is the model's child process (crash); it does nothing
// unless VOLBACK_MODEL_CHILD says what to do.
func TestModelChild(t *testing.T) {
	var c modelChild
	if err := json.Unmarshal([]byte(os.Getenv("VOLBACK_MODEL_CHILD")), &c); err != nil {
		t.Skip("not a child of the model")
	}
	cfg, err := LoadConfig(c.Home)
	if err != nil {
		t.Fatal(err)
	}
	cfg.packSize = c.PackSize
	if c.Encrypted {
		cfg.Password, cfg.kdf = []byte("model"), testKDF
	}
	s, err := Open(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	id := ""
	switch c.Op {
	case "incremental":
		bv, err := s.CreateBackup(ctx, BackupRequest{Volume: c.Volume, Incremental: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		id = bv.ID
	case "delete":
		if _, err := s.DeleteBackups(ctx, DeleteRequest{Refs: []string{c.Backup}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(c.Result, []byte(id), 0o600); err != nil {
		t.Fatal(err)
	}
}
