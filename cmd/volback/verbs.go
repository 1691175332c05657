package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/service"
)

// Adding a verb: append a *cli.Command to commands() with a Category (see
// categoryOrder in help.go), Usage (one line), ArgsUsage (positional
// arguments in capitals), Flags whose Usage names their value in
// `backquotes`, and an Action that checks its argument count with args()
// and calls the service with call(). Help, the man page, completion, usage
// errors and flags after the arguments then work for it without more edits.
// Path arguments go through absPath before they are sent.

// args checks the number of positional arguments.
func args(c *cli.Context, min, max int, names string) error {
	n := c.NArg()
	if n < min || (max >= 0 && n > max) {
		return usageError{fmt.Errorf("%s: expected %s, got %d argument(s)", c.Command.Name, names, n), c.Command.Name}
	}
	return nil
}

// volumeSize parses SIZE: a bare number is GiB (as in Cinder), else a
// number with a K/M/G/T suffix.
func volumeSize(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > 1<<33 {
			return 0, fmt.Errorf("size %q out of range", s)
		}
		return n << 30, nil
	}
	return service.ParseSize(s)
}

var allProjectsFlag = &cli.BoolFlag{Name: "all-projects", Usage: "every project's (admins only)"}

var azFlag = &cli.StringFlag{Name: "availability-zone", Usage: "availability zone `AZ` (repository) of the volume"}

func commands() []*cli.Command {
	return append([]*cli.Command{
		{Name: "manage", Usage: "register an existing image file, block device or RBD image (rbd://POOL/IMAGE) as a volume", ArgsUsage: "SOURCE", Category: "volumes",
			Flags: []cli.Flag{&cli.StringFlag{Name: "name", Required: true, Usage: "volume `NAME`"}, azFlag},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "SOURCE"); err != nil {
					return err
				}
				src, err := absPath(c.Args().First())
				if err != nil {
					return err
				}
				return call(c, "manage", service.ManageRequest{Name: c.String("name"), Source: src,
					AvailabilityZone: c.String("availability-zone"), Project: project(c)}, &service.VolumeView{})
			}},
		{Name: "create", Usage: "create a new volume (an image file, or an RBD image where the zone's volumes are), empty or from a backup", ArgsUsage: "SIZE", Category: "volumes",
			Description: "SIZE is in GiB as in Cinder, or a number with a K, M, G or T suffix (256M); with --backup-id it may be 0 to take the backup's size.",
			Flags: []cli.Flag{&cli.StringFlag{Name: "name", Required: true, Usage: "volume `NAME`"}, azFlag,
				&cli.StringFlag{Name: "backup-id", Usage: "restore `BACKUP` into the new volume"},
				&cli.StringFlag{Name: "path", Usage: "image `FILE` or rbd://POOL/IMAGE to create (default: the zone's volumes setting, else HOME/volumes/ID.img)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "SIZE"); err != nil {
					return err
				}
				size, err := volumeSize(c.Args().First())
				if err != nil {
					return usageError{err, c.Command.Name}
				}
				path, err := absPath(c.String("path"))
				if err != nil {
					return err
				}
				return call(c, "create", service.CreateRequest{Name: c.String("name"), BackupID: c.String("backup-id"),
					AvailabilityZone: c.String("availability-zone"), Path: path, Size: size,
					Project: project(c)}, &service.VolumeView{})
			}},
		{Name: "list", Usage: "list volumes", Category: "volumes", Flags: []cli.Flag{allProjectsFlag}, Action: func(c *cli.Context) error {
			if err := args(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			return call(c, "list", service.Ref{AllProjects: c.Bool("all-projects")}, &[]service.VolumeView{})
		}},
		refVerb("show", "show a volume", "VOLUME", "volumes", &service.VolumeView{}),
		refVerb("delete", "delete a volume (its file or image only if volback created it)", "VOLUME", "volumes", &service.VolumeView{}),
		{Name: "backup-create", Usage: "back up a volume", ArgsUsage: "VOLUME", Category: "backups",
			Flags: []cli.Flag{&cli.StringFlag{Name: "name", Usage: "backup `NAME`"}, &cli.StringFlag{Name: "description", Usage: "free `TEXT`"},
				&cli.BoolFlag{Name: "incremental", Usage: "only what changed since the volume's latest available backup"},
				&cli.BoolFlag{Name: "force", Usage: "back up a volume in use through a snapshot taken now (crash-consistent)"},
				&cli.BoolFlag{Name: "allow-inconsistent", Usage: "read a volume in use live, without a snapshot (recorded as not consistent)"},
				&cli.StringFlag{Name: "snapshot-id", Usage: "back up `SNAPSHOT` of the volume"},
				&cli.StringFlag{Name: "availability-zone", Usage: "write to zone `AZ`'s repository (default: the volume's zone)"},
				&cli.StringFlag{Name: "container", Usage: "write to the repository registered as `NAME` (repo-init --name)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "VOLUME"); err != nil {
					return err
				}
				return call(c, "backup-create", service.BackupRequest{Volume: c.Args().First(), Name: c.String("name"),
					Description: c.String("description"), Incremental: c.Bool("incremental"), Project: project(c),
					Force: c.Bool("force"), AllowInconsistent: c.Bool("allow-inconsistent"), SnapshotID: c.String("snapshot-id"),
					AvailabilityZone: c.String("availability-zone"), Container: c.String("container")},
					&service.BackupView{})
			}},
		{Name: "backup-list", Usage: "list backups, newest first", Category: "backups",
			Flags: []cli.Flag{&cli.StringFlag{Name: "volume-id", Usage: "only backups of `VOLUME`"}, allProjectsFlag},
			Action: func(c *cli.Context) error {
				if err := args(c, 0, 0, "no arguments"); err != nil {
					return err
				}
				return call(c, "backup-list", service.Ref{Ref: c.String("volume-id"), AllProjects: c.Bool("all-projects")}, &[]service.BackupView{})
			}},
		refVerb("backup-show", "show a backup", "BACKUP", "backups", &service.BackupView{}),
		{Name: "backup-delete", Usage: "delete backups (children before their parents when both are named)", ArgsUsage: "BACKUP...", Category: "backups",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "(admins only) also cancel a backup being created, and delete a damaged backup whose manifest is gone, one stuck in another status, or a record (by full id) the catalog does not know"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, -1, "BACKUP..."); err != nil {
					return err
				}
				return call(c, "backup-delete", service.DeleteRequest{Refs: c.Args().Slice(), Force: c.Bool("force")}, &[]service.BackupView{})
			}},
		{Name: "backup-restore", Usage: "restore a backup to a new volume or over an existing one", ArgsUsage: "BACKUP", Category: "backups",
			Flags: []cli.Flag{&cli.StringFlag{Name: "volume", Usage: "overwrite `VOLUME` (as large as the backup or larger)"},
				&cli.StringFlag{Name: "name", Usage: "`NAME` of the new volume"},
				&cli.StringFlag{Name: "path", Usage: "image `FILE` of the new volume (default: HOME/volumes/ID.img)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "BACKUP"); err != nil {
					return err
				}
				if c.IsSet("volume") && (c.IsSet("path") || c.IsSet("name")) {
					return usageError{fmt.Errorf("backup-restore: --volume overwrites an existing volume; --name and --path are for a new one, give one or the other"), c.Command.Name}
				}
				path, err := absPath(c.String("path"))
				if err != nil {
					return err
				}
				return call(c, "backup-restore", service.RestoreRequest{Backup: c.Args().First(), Volume: c.String("volume"),
					Name: c.String("name"), Path: path, Project: project(c)}, &service.RestoreView{})
			}},
		exportCommand(), importCommand(),
		{Name: "repo-gc", Usage: "delete unused packs and repack mostly-dead ones", Category: "repositories",
			Flags: []cli.Flag{&cli.StringFlag{Name: "zone", Usage: "only availability zone `AZ`'s repository"},
				&cli.StringFlag{Name: "grace", Usage: "delete packs nothing references once older than `DURATION` (default: gc_grace, 1h; 0: at once)"},
				&cli.Float64Flag{Name: "repack-below", Usage: "repack packs whose live share is below `SHARE` (default: gc_repack_below, 0.5)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 0, 0, "no arguments"); err != nil {
					return err
				}
				req := service.GCRequest{Zone: c.String("zone"), Grace: c.String("grace")}
				if c.IsSet("repack-below") {
					v := c.Float64("repack-below")
					req.RepackBelow = &v
				}
				return call(c, "repo-gc", req, &[]service.GCReport{})
			}},
		{Name: "repo-repair", Usage: "find lost chunks, fix references, mark damaged backups (--rewrite: save what is readable)", Category: "repositories",
			Flags: []cli.Flag{&cli.StringFlag{Name: "zone", Usage: "only availability zone `AZ`'s repository"},
				&cli.BoolFlag{Name: "read-data", Usage: "also read and verify every chunk"},
				&cli.BoolFlag{Name: "rewrite", Usage: "write a new backup of what is readable of each damaged backup"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 0, 0, "no arguments"); err != nil {
					return err
				}
				return call(c, "repo-repair", service.RepairRequest{Zone: c.String("zone"), ReadData: c.Bool("read-data"),
					Rewrite: c.Bool("rewrite")}, &[]service.RepairReport{})
			}},
		checkCommand(),
		verifyCommand(),
		rebuildCommand(),
		mountCommand(),
		umountCommand(),
		serveCommand(),
	}, append(lifecycleCommands(), repoCommands()...)...)
}

// refVerb is a verb taking one volume or backup.
func refVerb(name, usage, argName, category string, resp any) *cli.Command {
	return &cli.Command{Name: name, Usage: usage, ArgsUsage: argName, Category: category, Action: func(c *cli.Context) error {
		if err := args(c, 1, 1, argName); err != nil {
			return err
		}
		return call(c, name, service.Ref{Ref: c.Args().First()}, resp)
	}}
}

func checkCommand() *cli.Command {
	return &cli.Command{Name: "repo-check", Usage: "recount chunk references and check every backup's objects", Category: "repositories",
		Description: "Exit status 1 when any problem is found; each problem is printed on stderr.",
		Flags: []cli.Flag{&cli.StringFlag{Name: "zone", Usage: "only availability zone `AZ`'s repositories"},
			&cli.StringFlag{Name: "repository", Usage: "only `REPOSITORY` (name, URL or id)"},
			&cli.BoolFlag{Name: "read-data", Usage: "also read, decrypt and verify every referenced chunk"},
			&cli.Float64Flag{Name: "sample", Usage: "read and verify only `PERCENT` of the chunks, resuming where the last sampled run stopped (a scheduled scrub)"}},
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			var reps []service.CheckReport
			if err := call(c, "repo-check", service.CheckRequest{Zone: c.String("zone"), ReadData: c.Bool("read-data"),
				Sample: c.Float64("sample"), Repository: c.String("repository")}, &reps); err != nil {
				return err
			}
			n := 0
			for _, r := range reps {
				n += len(r.Problems)
				for _, p := range r.Problems {
					fmt.Fprintf(os.Stderr, "volback: %s: %s\n", r.Repository, p)
				}
				for _, d := range r.Damaged {
					fmt.Fprintf(os.Stderr, "volback: %s: backup %s is damaged at %s\n", r.Repository, d.BackupID, rangesText(d.DamagedRanges))
				}
				if r.UnreferencedPacks > 0 {
					fmt.Fprintf(os.Stderr, "volback: %s: %d pack(s), %d bytes, are referenced by nothing; repo-gc deletes them once they are older than its grace period\n",
						r.Repository, r.UnreferencedPacks, r.UnreferencedBytes)
				}
			}
			if n > 0 {
				return fmt.Errorf("repo-check found %d problem(s); see above", n)
			}
			return nil
		}}
}

func verifyCommand() *cli.Command {
	return &cli.Command{Name: "backup-verify", Usage: "check that every chunk of backups exists (--read-data: decrypts and hashes right)", ArgsUsage: "BACKUP...", Category: "backups",
		Description: "Damaged backups are listed on stderr with their damaged byte ranges and marked (backup-show's damaged); a backup marked damaged that verifies whole is unmarked. Exit status 1 when any backup is damaged.",
		Flags:       []cli.Flag{&cli.BoolFlag{Name: "read-data", Usage: "also read, decrypt and verify every chunk"}},
		Action: func(c *cli.Context) error {
			if err := args(c, 1, -1, "BACKUP..."); err != nil {
				return err
			}
			var reps []service.VerifyReport
			if err := call(c, "backup-verify", service.VerifyRequest{Refs: c.Args().Slice(), ReadData: c.Bool("read-data")}, &reps); err != nil {
				return err
			}
			n := 0
			for _, r := range reps {
				if r.Damaged {
					n++
					fmt.Fprintf(os.Stderr, "volback: backup %s is damaged at %s\n", r.BackupID, rangesText(r.DamagedRanges))
					for _, p := range r.Problems {
						fmt.Fprintf(os.Stderr, "volback: backup %s: %s\n", r.BackupID, p)
					}
				}
			}
			if n > 0 {
				return fmt.Errorf("%d of %d backup(s) damaged; see above", n, len(reps))
			}
			return nil
		}}
}

// rangesText prints damaged byte ranges as "bytes 0-65535 (chunk ...), ...".
func rangesText(rs []service.ByteRange) string {
	var b strings.Builder
	b.WriteString("bytes ")
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d-%d", r.Offset, r.Offset+r.Length-1)
		if r.Chunk != "" {
			fmt.Fprintf(&b, " (chunk %s)", r.Chunk)
		}
	}
	return b.String()
}
