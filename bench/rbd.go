package main

// W7: an RBD image on the Ceph test cluster, backed up in full, changed by
// 1% in scattered 64 KiB writes, backed up incrementally (through RBD's
// snapshot diff), and restored to a new image — against `rbd export` and
// `rbd import` of the same image on the same cluster in the same run.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// cephEnv is the test cluster, as integration/ceph/start.sh's env file
// describes it (make bench-ceph sources it).
type cephEnv struct {
	conf, user, pool string
	osds             []string // osd.N of every OSD, listed once (see osdReadBytes)
}

func cephFromEnv() (cephEnv, error) {
	e := cephEnv{conf: os.Getenv("VOLBACK_CEPH_CONF"), user: os.Getenv("VOLBACK_CEPH_USER"), pool: os.Getenv("VOLBACK_CEPH_RBD_POOL")}
	if e.conf == "" || e.pool == "" {
		return e, fmt.Errorf("W7 needs the Ceph test cluster: run `make bench-ceph`, or `integration/ceph/start.sh start DIR && . DIR/env` first")
	}
	if e.user == "" {
		e.user = "admin"
	}
	return e, nil
}

// locator is volback's locator of image.
func (e cephEnv) locator(image string) string {
	q := url.Values{"conf": {e.conf}, "user": {e.user}}
	return "rbd://" + e.pool + "/" + image + "?" + q.Encode()
}

func (e cephEnv) spec(image string) string { return e.pool + "/" + image }

func (e cephEnv) rbd(args ...string) command {
	return command{name: "rbd", args: append([]string{"--conf", e.conf, "--id", e.user, "--no-progress"}, args...)}
}

// remove deletes an image and its snapshots; a missing one is fine.
func (e cephEnv) remove(ctx context.Context, image string) {
	run(ctx, e.rbd("snap", "purge", e.spec(image)))
	run(ctx, e.rbd("rm", e.spec(image)))
}

// listOSDs names the cluster's OSDs for osdReadBytes. It runs a monitor
// command (`osd ls`), which the monitor writes to its audit log and so
// commits within paxos_propose_interval (1 s); an RBD snapshot created in
// the second after that waits for the next commit. So it runs once, before
// anything is timed, and never between a workload's steps.
func (e *cephEnv) listOSDs(ctx context.Context) error {
	_, out, err := run(ctx, command{name: "ceph", args: []string{"--conf", e.conf, "--id", e.user, "osd", "ls", "-f", "json"}})
	if err != nil {
		return err
	}
	var ids []int
	if err := json.Unmarshal(out, &ids); err != nil || len(ids) == 0 {
		return fmt.Errorf("ceph osd ls: no OSDs in %q (%v)", out, err)
	}
	e.osds = e.osds[:0]
	for _, id := range ids {
		e.osds = append(e.osds, fmt.Sprintf("osd.%d", id))
	}
	return nil
}

// osdReadBytes is how many bytes the cluster's OSDs have served to reads
// (the op_r_out_bytes counters), so a workload's reads are measured where
// they happen, not as the client reports them. It asks each OSD by name:
// `tell osd.*` would first run `osd ls` on the monitor (see listOSDs) and
// make the incremental's snapshot that follows wait a second for it.
func (e cephEnv) osdReadBytes(ctx context.Context) (int64, error) {
	var total int64
	for _, osd := range e.osds {
		_, out, err := run(ctx, command{name: "ceph", args: []string{"--conf", e.conf, "--id", e.user, "tell", osd, "perf", "dump", "-f", "json"}})
		if err != nil {
			return 0, err
		}
		var d struct {
			OSD struct {
				Out int64 `json:"op_r_out_bytes"`
			} `json:"osd"`
		}
		if err := json.Unmarshal(out, &d); err != nil {
			return 0, fmt.Errorf("ceph tell %s perf dump: %v", osd, err)
		}
		total += d.OSD.Out
	}
	return total, nil
}

// w7 runs the RBD workload with its own volback home and images, removed
// at the end.
func (b *bench) w7(ctx context.Context) {
	fail := func(w string, err error) {
		b.add(&row{workload: w, tool: "volback", err: oneLine(err)})
	}
	e, err := cephFromEnv()
	if err != nil {
		for _, w := range []string{"W7 full", "W7 incr", "W7 restore"} {
			fail(w, err)
		}
		return
	}
	if err := e.listOSDs(ctx); err != nil {
		for _, w := range []string{"W7 full", "W7 incr", "W7 restore"} {
			fail(w, fmt.Errorf("listing the OSDs: %w", err))
		}
		return
	}
	size := b.cfg.rbdSize
	stamp := time.Now().UTC().Format("20060102-150405")
	src, imported, restored := "w7-"+stamp, "w7-import-"+stamp, "w7-restored-"+stamp
	defer e.remove(context.Background(), src)
	defer e.remove(context.Background(), imported)
	defer e.remove(context.Background(), restored)
	v := newVolback(b.cfg.volback, b.work)
	v.home = filepath.Join(b.work, "volback-rbd-home")
	if err := v.setup(ctx); err != nil {
		fail("W7 full", err)
		return
	}

	dir := filepath.Join(b.work, "w7")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fail("W7 full", err)
		return
	}
	file, export, check := filepath.Join(dir, "w7.img"), filepath.Join(dir, "export.img"), filepath.Join(dir, "check.img")
	start := time.Now()
	if err := makeImage(file, size, 7); err != nil {
		fail("W7 full", fmt.Errorf("making the image: %w", err))
		return
	}
	if _, _, err := run(ctx, e.rbd("import", file, e.spec(src))); err != nil {
		fail("W7 full", fmt.Errorf("importing the image: %w", err))
		return
	}
	logf("W7: image %s of %s (the bench's mix) in %.1f s", e.spec(src), mib(size), time.Since(start).Seconds())
	// The same bytes from a local image file, in a home of their own: what
	// the pipeline costs without RBD, for comparison.
	fv := newVolback(b.cfg.volback, b.work)
	fv.home = filepath.Join(b.work, "volback-file-home")
	_, fileRow := b.rbdBackupRow(ctx, fv, "W7 full", file, false, size)
	fileRow.tool, fileRow.note = "volback-file", "the same image as a local file (no RBD)"
	os.Remove(file)
	os.RemoveAll(fv.home)

	// Full: rbd export (with an fsync, as cp) against volback backup-create.
	m, _, err := timed(ctx, command{name: "sh", args: []string{"-c", `rbd --conf "$1" --id "$2" --no-progress export "$3" "$4" && sync "$4"`, "sh", e.conf, e.user, e.spec(src), export}})
	exportRow := &row{workload: "W7 full", tool: "rbd", secs: m.wall.Seconds(), rssKiB: m.rssKiB, bytes: size, note: "rbd export to a file + sync"}
	if err != nil {
		exportRow = &row{workload: "W7 full", tool: "rbd", err: oneLine(err)}
	}
	os.Remove(export)
	loc := e.locator(src)
	_, fullRow := b.rbdBackupRow(ctx, v, "W7 full", loc, false, size)
	b.add(fullRow)
	b.add(exportRow)
	b.add(fileRow)
	if fullRow.err != "" {
		return
	}

	// Incremental after 1% scattered 64 KiB writes, its reads counted at the OSD.
	pieces, err := rewriteRBD(e, src, 0.01, 3)
	if err != nil {
		fail("W7 incr", fmt.Errorf("rewriting 1%%: %w", err))
		return
	}
	changed, rounded := changedBytes(pieces, pieceSize, 64<<10)
	logf("W7: rewrote %s in %d pieces of %d KiB (%s in whole 64 KiB chunks)", mib(changed), len(pieces), pieceSize>>10, mib(rounded))
	before, err := e.osdReadBytes(ctx)
	if err != nil {
		fail("W7 incr", fmt.Errorf("reading the OSDs' counters: %w", err))
		return
	}
	inc, incRow := b.rbdBackupRow(ctx, v, "W7 incr", loc, true, size)
	after, err := e.osdReadBytes(ctx)
	if err == nil && incRow.err == "" {
		incRow.readBytes, incRow.changedBytes = after-before, rounded
		incRow.note = fmt.Sprintf("read %s from the OSD for %s changed (%s in whole chunks)", mib(after-before), mib(changed), mib(rounded))
	}
	b.add(incRow)
	if incRow.err != "" {
		return
	}

	// Restore: rbd import of an export of the image as backed up, against
	// volback restoring the incremental to a new image.
	if _, _, err := run(ctx, e.rbd("export", e.spec(src), export)); err != nil {
		fail("W7 restore", fmt.Errorf("exporting the image: %w", err))
		return
	}
	defer os.Remove(export)
	want, err := fileSHA256(export)
	if err != nil {
		fail("W7 restore", err)
		return
	}
	m, _, err = timed(ctx, e.rbd("import", export, e.spec(imported)))
	importRow := &row{workload: "W7 restore", tool: "rbd", secs: m.wall.Seconds(), rssKiB: m.rssKiB, bytes: size, note: "rbd import of a file"}
	if err != nil {
		importRow = &row{workload: "W7 restore", tool: "rbd", err: oneLine(err)}
	}
	e.remove(ctx, imported)
	m, _, err = timed(ctx, v.cmd("create", "--name", "w7-restored", "--backup-id", inc, "--path", e.locator(restored), "0"))
	r := &row{workload: "W7 restore", tool: "volback", secs: m.wall.Seconds(), rssKiB: m.rssKiB, bytes: size}
	if err != nil {
		r = &row{workload: "W7 restore", tool: "volback", err: oneLine(err)}
	} else if _, _, err := run(ctx, e.rbd("export", e.spec(restored), check)); err != nil {
		r.badData, r.note = true, "FAIL: cannot export the restored image: "+oneLine(err)
	} else if got, err := fileSHA256(check); err != nil || got != want {
		r.badData, r.note = true, "FAIL: the restored image differs from an rbd export of the source"
	} else {
		r.note = "sha256 equals an rbd export of the source"
	}
	os.Remove(check)
	b.add(r)
	b.add(importRow)
	// The same restore into a local image file: the pipeline without RBD.
	m, _, err = timed(ctx, v.cmd("create", "--name", "w7-file", "--backup-id", inc, "--path", check, "0"))
	fileRow = &row{workload: "W7 restore", tool: "volback-file", secs: m.wall.Seconds(), rssKiB: m.rssKiB, bytes: size, note: "the same restore into a local image file (no RBD)"}
	if err != nil {
		fileRow = &row{workload: "W7 restore", tool: "volback-file", err: oneLine(err)}
	} else if got, err := fileSHA256(check); err != nil || got != want {
		fileRow.badData, fileRow.note = true, "FAIL: the restored file differs from an rbd export of the source"
	}
	os.Remove(check)
	b.add(fileRow)
}

// rbdBackupRow times one volback backup of the RBD volume at loc into its
// home's repository (file://, on the bench's disk).
func (b *bench) rbdBackupRow(ctx context.Context, v *volback, workload, loc string, incremental bool, size int64) (string, *row) {
	before, _ := v.repoBytes()
	id, m, err := v.backup(ctx, loc, incremental)
	r := &row{workload: workload, tool: "volback", bytes: size}
	if err != nil {
		r.err = oneLine(err)
		return "", r
	}
	after, _ := v.repoBytes()
	r.secs, r.rssKiB = m.wall.Seconds(), m.rssKiB
	r.repo, r.hasRepo, r.growth = after-before, true, incremental
	if !incremental {
		r.repo = after
	}
	return id, r
}

// changedBytes is how many bytes the pieces (offsets of length n) cover,
// and how many the chunks of size cs they touch hold.
func changedBytes(offsets []int64, n, cs int64) (changed, rounded int64) {
	type span struct{ lo, hi int64 }
	merge := func(spans []span) int64 {
		sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
		var total, end int64
		for _, s := range spans {
			lo := max(s.lo, end)
			if s.hi > lo {
				total += s.hi - lo
			}
			end = max(end, s.hi)
		}
		return total
	}
	var exact, chunks []span
	for _, off := range offsets {
		exact = append(exact, span{off, off + n})
		chunks = append(chunks, span{off / cs * cs, (off + n + cs - 1) / cs * cs})
	}
	return merge(exact), merge(chunks)
}

// cephVersion is what `ceph --version` says, or why it cannot.
func cephVersion() string {
	_, out, err := run(context.Background(), command{name: "ceph", args: []string{"--version"}})
	if err != nil {
		return oneLine(err)
	}
	return strings.TrimSpace(string(out))
}
