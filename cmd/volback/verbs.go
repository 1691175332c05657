package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/service"
)

// args checks the number of positional arguments.
func args(c *cli.Context, min, max int, names string) error {
	n := c.NArg()
	if n < min || (max >= 0 && n > max) {
		return usageError{fmt.Errorf("%s: expected %s, got %d argument(s); see 'volback %s --help'", c.Command.Name, names, n, c.Command.Name)}
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

var azFlag = &cli.StringFlag{Name: "availability-zone", Usage: "availability zone (repository) of the volume"}

func commands() []*cli.Command {
	return append([]*cli.Command{
		{Name: "manage", Usage: "register an existing image file or block device as a volume", ArgsUsage: "SOURCE",
			Flags: []cli.Flag{&cli.StringFlag{Name: "name", Required: true, Usage: "volume name"}, azFlag},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "SOURCE"); err != nil {
					return err
				}
				return call(c, "manage", service.ManageRequest{Name: c.String("name"), Source: c.Args().First(),
					AvailabilityZone: c.String("availability-zone"), Project: c.String("project")}, &service.VolumeView{})
			}},
		{Name: "create", Usage: "create a new image-file volume, empty or from a backup", ArgsUsage: "SIZE",
			Flags: []cli.Flag{&cli.StringFlag{Name: "name", Required: true, Usage: "volume name"}, azFlag,
				&cli.StringFlag{Name: "backup-id", Usage: "restore this backup into the new volume"},
				&cli.StringFlag{Name: "path", Usage: "image file to create (default: under the home)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "SIZE"); err != nil {
					return err
				}
				size, err := volumeSize(c.Args().First())
				if err != nil {
					return usageError{err}
				}
				return call(c, "create", service.CreateRequest{Name: c.String("name"), BackupID: c.String("backup-id"),
					AvailabilityZone: c.String("availability-zone"), Path: c.String("path"), Size: size,
					Project: c.String("project")}, &service.VolumeView{})
			}},
		{Name: "list", Usage: "list volumes", Flags: []cli.Flag{allProjectsFlag}, Action: func(c *cli.Context) error {
			if err := args(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			return call(c, "list", service.Ref{AllProjects: c.Bool("all-projects")}, &[]service.VolumeView{})
		}},
		refVerb("show", "show a volume", "VOLUME", &service.VolumeView{}),
		refVerb("delete", "delete a volume (its file only if volback created it)", "VOLUME", &service.VolumeView{}),
		{Name: "backup-create", Usage: "back up a volume", ArgsUsage: "VOLUME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "name", Usage: "backup name"}, &cli.StringFlag{Name: "description", Usage: "free text"},
				&cli.BoolFlag{Name: "incremental", Usage: "only what changed since the latest backup"},
				&cli.BoolFlag{Name: "force", Usage: "back up a volume in use through a snapshot taken now (crash-consistent)"},
				&cli.BoolFlag{Name: "allow-inconsistent", Usage: "read a volume in use live, without a snapshot (recorded as not consistent)"},
				&cli.StringFlag{Name: "snapshot-id", Usage: "back up this snapshot of the volume"},
				&cli.StringFlag{Name: "availability-zone", Usage: "write to this zone's repository (default: the volume's zone)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "VOLUME"); err != nil {
					return err
				}
				return call(c, "backup-create", service.BackupRequest{Volume: c.Args().First(), Name: c.String("name"),
					Description: c.String("description"), Incremental: c.Bool("incremental"), Project: c.String("project"),
					Force: c.Bool("force"), AllowInconsistent: c.Bool("allow-inconsistent"), SnapshotID: c.String("snapshot-id"),
					AvailabilityZone: c.String("availability-zone")},
					&service.BackupView{})
			}},
		{Name: "backup-list", Usage: "list backups, newest first",
			Flags: []cli.Flag{&cli.StringFlag{Name: "volume-id", Usage: "only backups of this volume"}, allProjectsFlag},
			Action: func(c *cli.Context) error {
				if err := args(c, 0, 0, "no arguments"); err != nil {
					return err
				}
				return call(c, "backup-list", service.Ref{Ref: c.String("volume-id"), AllProjects: c.Bool("all-projects")}, &[]service.BackupView{})
			}},
		refVerb("backup-show", "show a backup", "BACKUP", &service.BackupView{}),
		{Name: "backup-delete", Usage: "delete backups", ArgsUsage: "BACKUP...",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "also cancel a backup being created (admins only)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, -1, "BACKUP..."); err != nil {
					return err
				}
				return call(c, "backup-delete", service.DeleteRequest{Refs: c.Args().Slice(), Force: c.Bool("force")}, &[]service.BackupView{})
			}},
		{Name: "backup-restore", Usage: "restore a backup to a new volume or over an existing one", ArgsUsage: "BACKUP",
			Flags: []cli.Flag{&cli.StringFlag{Name: "volume", Usage: "overwrite this volume"},
				&cli.StringFlag{Name: "name", Usage: "name of the new volume"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "BACKUP"); err != nil {
					return err
				}
				return call(c, "backup-restore", service.RestoreRequest{Backup: c.Args().First(), Volume: c.String("volume"),
					Name: c.String("name"), Project: c.String("project")}, &service.RestoreView{})
			}},
		{Name: "repo-gc", Usage: "delete unused packs and repack mostly-dead ones",
			Flags: []cli.Flag{&cli.StringFlag{Name: "zone", Usage: "only this availability zone's repository"}},
			Action: func(c *cli.Context) error {
				return call(c, "repo-gc", service.Ref{Zone: c.String("zone")}, &[]service.GCReport{})
			}},
		checkCommand(),
		exportCommand(), importCommand(), rebuildCommand(),
		mountCommand(),
		umountCommand(),
		serveCommand(),
	}, lifecycleCommands()...)
}

// refVerb is a verb taking one volume or backup.
func refVerb(name, usage, argName string, resp any) *cli.Command {
	return &cli.Command{Name: name, Usage: usage, ArgsUsage: argName, Action: func(c *cli.Context) error {
		if err := args(c, 1, 1, argName); err != nil {
			return err
		}
		return call(c, name, service.Ref{Ref: c.Args().First()}, resp)
	}}
}

func checkCommand() *cli.Command {
	return &cli.Command{Name: "repo-check", Usage: "recount chunk references and check every backup's objects (--read-data: every chunk)",
		Flags: []cli.Flag{&cli.StringFlag{Name: "zone", Usage: "only this availability zone's repository"},
			&cli.BoolFlag{Name: "read-data", Usage: "also read and verify every referenced chunk"}},
		Action: func(c *cli.Context) error {
			var reps []service.CheckReport
			if err := call(c, "repo-check", service.CheckRequest{Zone: c.String("zone"), ReadData: c.Bool("read-data")}, &reps); err != nil {
				return err
			}
			n := 0
			for _, r := range reps {
				n += len(r.Problems)
				for _, p := range r.Problems {
					fmt.Fprintf(os.Stderr, "volback: %s: %s\n", r.Repository, p)
				}
			}
			if n > 0 {
				return fmt.Errorf("repo-check found %d problem(s); see above", n)
			}
			return nil
		}}
}
