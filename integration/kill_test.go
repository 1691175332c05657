package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"
)

// killPoints are the failpoints (package failpoint) the crash test kills
// volback at, with how many hits of each one command reaches at most.
var killPoints = []struct {
	verb, point string
	hits        int
}{
	{"backup", "backup.pack-recorded", 2},
	{"backup", "backup.pack-committed", 2},
	{"backup", "backup.segment-written", 4}, // segment_chunks 64: four per backup
	{"backup", "backup.refs-batch", 4},
	{"backup", "backup.packs-written", 1},
	{"backup", "backup.manifest-written", 1},
	{"backup", "backup.record-written", 1},
	{"backup", "backup.available", 1},
	{"delete", "delete.record-deleted", 1},
	{"delete", "refs.release-batch", 1},
	{"delete", "delete.catalog-deleted", 1},
	{"delete", "gc.pack-deleted", 1}, // the sweep after a delete
	{"gc", "gc.generation", 1},
	{"gc", "gc.repack-written", 1},
	{"gc", "gc.repack-catalog", 1},
	{"gc", "gc.entries-dropped", 1},
	{"gc", "gc.pack-deleted", 3},
	{"restore", "restore.chunk", 200},
}

// TestKillAtFailpoints SIGKILLs volback at seeded points of backup-create,
// backup-delete, repo-gc (mid-repack included) and backup-restore, at
// least 20 times. After each kill the next command must resolve what was
// left: no backup stays creating, deleting or restoring, every backup
// that was available before restores byte-exact, and repo-check
// --read-data is clean. VOLBACK_KILL_SEED replays a seed.
func TestKillAtFailpoints(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("VOLBACK_KILL_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (VOLBACK_KILL_SEED=%d replays it)", seed, seed)
	r := rand.New(rand.NewPCG(seed, 8))
	home := newHome(t)
	// Manifests of four segments, so kills land between a segment's
	// references and the next segment's.
	if err := os.WriteFile(filepath.Join(home, "volback.toml"), []byte("segment_chunks = 64\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(home, "v.img")
	const size = 16 * mib
	randomFile(t, img, size, seed)
	manage(t, home, "v", img)
	model := map[string]string{} // available backup -> sha256 it restores to
	var order []string           // model's backups, oldest first
	add := func(b Backup, sum string) { model[b.ID] = sum; order = append(order, b.ID) }
	forget := func(id string) {
		delete(model, id)
		order = slices.DeleteFunc(order, func(x string) bool { return x == id })
	}
	add(backupCreate(t, home, "v"), sha256File(t, img))

	kills := 0
	for i := 0; kills < 22 && i < 70; i++ {
		kp := killPoints[r.IntN(len(killPoints))]
		env := []string{fmt.Sprintf("VOLBACK_FAILPOINT=%s:%d", kp.point, 1+r.IntN(kp.hits))}
		var code int
		var out string
		deleting := ""
		switch kp.verb {
		case "backup":
			writeRandom(t, img, r.Int64N(size-6*mib), 6*mib, r.Uint64())
			sum := sha256File(t, img)
			out, _, code = runEnv(t, home, env, "-q", "-f", "json", "backup-create", "v")
			if code == 0 {
				var b Backup
				if err := json.Unmarshal([]byte(out), &b); err != nil {
					t.Fatal(err)
				}
				add(b, sum)
			}
		case "delete", "gc":
			if len(order) < 2 {
				writeRandom(t, img, r.Int64N(size-6*mib), 6*mib, r.Uint64())
				add(backupCreate(t, home, "v"), sha256File(t, img))
			}
			deleting = order[0]
			if kp.verb == "delete" {
				_, _, code = runEnv(t, home, env, "backup-delete", deleting)
				break
			}
			mustRun(t, home, "backup-delete", deleting)
			forget(deleting)
			_, _, code = runEnv(t, home, env, "repo-gc", "--grace", "0", "--repack-below", "0.9")
		case "restore":
			id := order[r.IntN(len(order))]
			_, _, code = runEnv(t, home, env, "-q", "backup-restore", "--name", fmt.Sprint("r", i), id)
		}
		switch {
		case code == -9:
			kills++
		case code != 0:
			t.Fatalf("%s (%s) failed without being killed", kp.verb, env[0])
		}

		// The next command resolves what the kill left.
		var list []Backup
		runJSON(t, home, &list, "backup-list")
		listed := map[string]Backup{}
		for _, b := range list {
			listed[b.ID] = b
			switch b.Status {
			case "available":
			case "error":
				mustRun(t, home, "backup-delete", b.ID)
			default:
				t.Fatalf("after a kill at %s: backup %s is %s", env[0], b.ID, b.Status)
			}
		}
		if deleting != "" && kp.verb == "delete" {
			if _, ok := listed[deleting]; !ok {
				forget(deleting) // the kill came after the delete was decided
			}
		}
		for _, b := range list {
			if _, known := model[b.ID]; !known && b.Status == "available" {
				add(b, sha256File(t, img)) // a backup killed after it became available
			}
		}
		ids := append([]string(nil), order...)
		sort.Strings(ids)
		for _, id := range ids {
			if b, ok := listed[id]; !ok || b.Status != "available" {
				t.Fatalf("after a kill at %s: backup %s, available before, is %+v", env[0], id, listed[id])
			}
			rv := restoreNew(t, home, id, "check")
			if got := sha256File(t, rv.Path); got != model[id] {
				t.Fatalf("after a kill at %s: backup %s does not restore byte-exact", env[0], id)
			}
			mustRun(t, home, "delete", rv.ID)
		}
		var vols []Volume
		runJSON(t, home, &vols, "list")
		for _, v := range vols {
			switch v.Status {
			case "available":
			case "error_restoring": // the target of a killed restore
				mustRun(t, home, "delete", v.ID)
			default:
				t.Fatalf("after a kill at %s: volume %s is %s", env[0], v.Name, v.Status)
			}
		}
		repoCheck(t, home)
		for len(order) > 3 {
			mustRun(t, home, "backup-delete", order[0])
			forget(order[0])
		}
	}
	if kills < 20 {
		t.Fatalf("only %d kills happened (seed %d); the points were not reached", kills, seed)
	}
	t.Logf("%d kills, every backup restored after each", kills)
}
