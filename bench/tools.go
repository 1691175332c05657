package main

// The tools under test, each behind the same small interface so every
// workload runs them identically. Each keeps its repository in its own
// folder of the work directory.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// tool is one backup program driven by the bench.
type tool interface {
	name() string
	// version says which build runs, or fails when the tool is not installed.
	version(ctx context.Context) (string, error)
	// setup creates the empty repository.
	setup(ctx context.Context) error
	// backup backs up the file src (caches dropped, timed) and returns an id
	// that restore and mount accept. A full backup reads every byte, even
	// when the tool's own metadata check says the file is unchanged; an
	// incremental one uses whatever change detection the tool has.
	backup(ctx context.Context, src string, incremental bool) (id string, m measure, err error)
	// restore writes backup id to a new file under dir (timed) and returns its
	// path and a function that removes it.
	restore(ctx context.Context, id, dir string) (path string, m measure, cleanup func(), err error)
	// repoBytes is the space the repository takes now.
	repoBytes() (int64, error)
	// mount exposes backup id as a file under mnt; nil proc means the tool
	// has no mount and the file is read straight from disk.
	mount(ctx context.Context, id, mnt string) (*mounted, error)
}

// ---- volback ----

type volback struct {
	bin, home string
	volumes   map[string]string // source path -> volume id
	restores  int
	// cipher, when set, makes setup repo-init an encrypted repository
	// (the passphrase goes in VOLBACK_PASSWORD, as an operator's would).
	cipher, label string
}

// newEncryptedVolback is volback on a repository encrypted with cipher.
func newEncryptedVolback(bin, work, cipher, label string) *volback {
	v := newVolback(bin, work)
	v.home = filepath.Join(work, label+"-home")
	v.cipher, v.label = cipher, label
	return v
}

func newVolback(bin, work string) *volback {
	return &volback{bin: bin, home: filepath.Join(work, "volback-home"), volumes: map[string]string{}}
}

func (v *volback) name() string {
	if v.label != "" {
		return v.label
	}
	return "volback"
}

func (v *volback) cmd(args ...string) command {
	c := command{name: v.bin, args: append([]string{"--home", v.home, "-q", "-f", "json"}, args...)}
	if v.cipher != "" {
		c.env = []string{"VOLBACK_PASSWORD=bench passphrase"}
	}
	return c
}

// version is the binary's --version if it has one, else its VCS revision,
// else its build time.
func (v *volback) version(ctx context.Context) (string, error) {
	st, err := os.Stat(v.bin)
	if err != nil {
		return "", fmt.Errorf("not installed (%v; build it with `go build -o volback ./cmd/volback`)", err)
	}
	if _, out, err := run(ctx, command{name: v.bin, args: []string{"--version"}}); err == nil {
		return strings.TrimSpace(string(out)), nil
	}
	if _, out, err := run(ctx, command{name: "go", args: []string{"version", "-m", v.bin}}); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if _, rev, ok := strings.Cut(line, "vcs.revision="); ok {
				return "commit " + strings.TrimSpace(rev), nil
			}
		}
	}
	return "binary built " + st.ModTime().UTC().Format("2006-01-02 15:04 UTC"), nil
}

func (v *volback) setup(ctx context.Context) error {
	if err := os.MkdirAll(v.home, 0o755); err != nil || v.cipher == "" {
		return err
	}
	_, _, err := run(ctx, v.cmd("repo-init", "--encryption", v.cipher, "file://"+filepath.Join(v.home, "repository")))
	return err
}

// jsonField runs c untimed and returns the named string fields of its JSON.
func decodeFields(out []byte, fields ...string) (map[string]string, error) {
	var rec map[string]any
	if err := json.Unmarshal(out, &rec); err != nil {
		return nil, fmt.Errorf("volback printed no JSON object (%v): %.200q", err, out)
	}
	got := map[string]string{}
	for _, f := range fields {
		s, ok := rec[f].(string)
		if !ok || s == "" {
			return nil, fmt.Errorf("volback JSON has no %q: %.200s", f, out)
		}
		got[f] = s
	}
	return got, nil
}

func (v *volback) backup(ctx context.Context, src string, incremental bool) (string, measure, error) {
	vol, ok := v.volumes[src]
	if !ok {
		_, out, err := run(ctx, v.cmd("manage", "--name", strings.TrimSuffix(filepath.Base(src), ".img"), src))
		if err != nil {
			return "", measure{}, err
		}
		f, err := decodeFields(out, "id")
		if err != nil {
			return "", measure{}, err
		}
		vol = f["id"]
		v.volumes[src] = vol
	}
	args := []string{"backup-create"}
	if incremental {
		args = append(args, "--incremental")
	}
	m, out, err := timed(ctx, v.cmd(append(args, vol)...))
	if err != nil {
		return "", m, err
	}
	f, err := decodeFields(out, "id")
	if err != nil {
		return "", m, err
	}
	return f["id"], m, nil
}

func (v *volback) restore(ctx context.Context, id, _ string) (string, measure, func(), error) {
	v.restores++
	m, out, err := timed(ctx, v.cmd("backup-restore", "--name", fmt.Sprintf("restored-%d", v.restores), id))
	if err != nil {
		return "", m, nil, err
	}
	f, err := decodeFields(out, "volume_id")
	if err != nil {
		return "", m, nil, err
	}
	_, out, err = run(ctx, v.cmd("show", f["volume_id"]))
	if err != nil {
		return "", m, nil, err
	}
	p, err := decodeFields(out, "path")
	if err != nil {
		return "", m, nil, err
	}
	cleanup := func() {
		// volback created the file, so deleting the volume removes it.
		if _, _, err := run(context.Background(), v.cmd("delete", f["volume_id"])); err != nil {
			logf("volback: removing restored volume: %v", err)
			os.Remove(p["path"])
		}
	}
	return p["path"], m, cleanup, nil
}

func (v *volback) repoBytes() (int64, error) {
	return storedBytes(filepath.Join(v.home, "repository"))
}

func (v *volback) mount(ctx context.Context, id, mnt string) (*mounted, error) {
	c := v.cmd("mount", "--cache-size", mountCache, mnt)
	return startMount(ctx, c, filepath.Join(mnt, "by-id", id+".img"), func() error {
		_, _, err := run(context.Background(), v.cmd("umount", mnt))
		return err
	})
}

// warmer is a tool whose stored data can be read into the page cache
// (W6 warm).
type warmer interface{ warm() error }

func (v *volback) warm() error { return readTree(filepath.Join(v.home, "repository")) }

func (c *cpTool) warm() error { return readTree(c.dir) }

// catalogBytes is the space the catalog takes.
func (v *volback) catalogBytes() (int64, error) { return storedBytes(filepath.Join(v.home, "catalog")) }

// ---- restic ----

type restic struct {
	env   []string
	names map[string]string // snapshot id -> backed-up file name
}

func newRestic(work string) *restic {
	return &restic{
		env: []string{
			"RESTIC_REPOSITORY=" + filepath.Join(work, "restic"),
			"RESTIC_PASSWORD=bench",
			"RESTIC_CACHE_DIR=" + filepath.Join(work, "restic-cache"),
		},
		names: map[string]string{},
	}
}

func (r *restic) name() string { return "restic" }

func (r *restic) cmd(dir string, args ...string) command {
	return command{dir: dir, env: r.env, name: "restic", args: args}
}

func (r *restic) version(ctx context.Context) (string, error) {
	return toolVersion(ctx, "restic", "version")
}

func (r *restic) setup(ctx context.Context) error {
	_, _, err := run(ctx, r.cmd("", "init", "-q"))
	return err
}

// backup runs in the file's folder with a relative name, so the snapshot
// holds the file at its top level. restic finds the parent snapshot by path
// itself, so a second backup is its incremental; a full one gets --force,
// or restic would skip the unchanged file by its mtime without reading it.
func (r *restic) backup(ctx context.Context, src string, incremental bool) (string, measure, error) {
	args := []string{"backup", "--json", "-q"}
	if !incremental {
		args = append(args, "--force")
	}
	m, out, err := timed(ctx, r.cmd(filepath.Dir(src), append(args, filepath.Base(src))...))
	if err != nil {
		return "", m, err
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		var s struct {
			Type string `json:"message_type"`
			ID   string `json:"snapshot_id"`
		}
		if json.Unmarshal(line, &s) == nil && s.Type == "summary" && s.ID != "" {
			r.names[s.ID] = filepath.Base(src)
			return s.ID, m, nil
		}
	}
	return "", m, fmt.Errorf("restic backup printed no summary with a snapshot_id: %.200q", out)
}

func (r *restic) restore(ctx context.Context, id, dir string) (string, measure, func(), error) {
	m, _, err := timed(ctx, r.cmd("", "restore", id, "--target", dir, "-q"))
	p := filepath.Join(dir, r.names[id])
	return p, m, func() { os.Remove(p) }, err
}

func (r *restic) repoBytes() (int64, error) { return storedBytes(envPath(r.env, "RESTIC_REPOSITORY")) }

func (r *restic) mount(ctx context.Context, id, mnt string) (*mounted, error) {
	return startMount(ctx, r.cmd("", "mount", mnt), filepath.Join(mnt, "ids", id, r.names[id]), nil)
}

// ---- borg ----

type borg struct {
	env      []string
	archives int
	names    map[string]string // archive -> backed-up file name
}

func newBorg(work string) *borg {
	return &borg{
		env: []string{
			"BORG_REPO=" + filepath.Join(work, "borg"),
			"BORG_PASSPHRASE=",
			"BORG_BASE_DIR=" + filepath.Join(work, "borg-base"),
			"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes",
			"BORG_RELOCATED_REPO_ACCESS_IS_OK=yes",
		},
		names: map[string]string{},
	}
}

func (b *borg) name() string { return "borg" }

func (b *borg) cmd(dir string, args ...string) command {
	return command{dir: dir, env: b.env, name: "borg", args: args}
}

func (b *borg) version(ctx context.Context) (string, error) {
	return toolVersion(ctx, "borg", "--version")
}

// setup makes an unencrypted repository: borg's fastest configuration.
func (b *borg) setup(ctx context.Context) error {
	_, _, err := run(ctx, b.cmd("", "init", "-e", "none"))
	return err
}

// backup creates a new archive of the file (relative name, so the archive
// holds it at its top level); borg deduplicates against every earlier
// archive, so a second one is its incremental. A full one disables the
// files cache, which would otherwise skip an unchanged file unread.
func (b *borg) backup(ctx context.Context, src string, incremental bool) (string, measure, error) {
	b.archives++
	id := fmt.Sprintf("a%d", b.archives)
	args := []string{"create"}
	if !incremental {
		args = append(args, "--files-cache=disabled")
	}
	m, _, err := timed(ctx, b.cmd(filepath.Dir(src), append(args, "::"+id, filepath.Base(src))...))
	if err == nil {
		b.names[id] = filepath.Base(src)
	}
	return id, m, err
}

func (b *borg) restore(ctx context.Context, id, dir string) (string, measure, func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", measure{}, nil, err
	}
	m, _, err := timed(ctx, b.cmd(dir, "extract", "::"+id))
	p := filepath.Join(dir, b.names[id])
	return p, m, func() { os.Remove(p) }, err
}

func (b *borg) repoBytes() (int64, error) { return storedBytes(envPath(b.env, "BORG_REPO")) }

func (b *borg) mount(ctx context.Context, id, mnt string) (*mounted, error) {
	return startMount(ctx, b.cmd("", "mount", "-f", "::"+id, mnt), filepath.Join(mnt, b.names[id]), nil)
}

// ---- cp ----

// cpTool is the floor: a plain sparse-aware copy, timed together with an
// fsync of the copy because the backup tools make their repositories durable.
type cpTool struct {
	dir    string
	copies int
}

func newCp(work string) *cpTool { return &cpTool{dir: filepath.Join(work, "cp")} }

func (c *cpTool) name() string { return "cp" }

func (c *cpTool) version(ctx context.Context) (string, error) {
	return toolVersion(ctx, "cp", "--version")
}

func (c *cpTool) setup(ctx context.Context) error { return os.MkdirAll(c.dir, 0o755) }

// copyTimed drops caches, then times cp and the fsync of its copy.
func copyTimed(ctx context.Context, src, dst string) (measure, error) {
	dropCaches()
	m, _, err := run(ctx, command{name: "cp", args: []string{"--sparse=always", src, dst}})
	if err != nil {
		return m, err
	}
	s, _, err := run(ctx, command{name: "sync", args: []string{dst}})
	m.wall += s.wall
	m.rssKiB = max(m.rssKiB, s.rssKiB)
	return m, err
}

func (c *cpTool) backup(ctx context.Context, src string, _ bool) (string, measure, error) {
	c.copies++
	dst := filepath.Join(c.dir, fmt.Sprintf("copy%d-%s", c.copies, filepath.Base(src)))
	m, err := copyTimed(ctx, src, dst)
	return dst, m, err
}

func (c *cpTool) restore(ctx context.Context, id, dir string) (string, measure, func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", measure{}, nil, err
	}
	p := filepath.Join(dir, "cp-restored.img")
	m, err := copyTimed(ctx, id, p)
	return p, m, func() { os.Remove(p) }, err
}

func (c *cpTool) repoBytes() (int64, error) { return storedBytes(c.dir) }

// mount has nothing to mount: W6 reads cp's copy straight from disk, the
// ceiling a FUSE mount is measured against.
func (c *cpTool) mount(_ context.Context, id, _ string) (*mounted, error) {
	return &mounted{file: id}, nil
}

// ---- helpers ----

// toolVersion runs a version command and returns its first line; a tool
// that is not on PATH is "not installed".
func toolVersion(ctx context.Context, name string, args ...string) (string, error) {
	if _, err := exec.LookPath(name); err != nil {
		return "", fmt.Errorf("not installed (%s not on PATH; `make deps` installs it)", name)
	}
	_, out, err := run(ctx, command{name: name, args: args})
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line, nil
}

func envPath(env []string, key string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, key+"="); ok {
			return v
		}
	}
	return ""
}
