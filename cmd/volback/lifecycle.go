package main

import (
	"github.com/urfave/cli/v2"
	"github.com/volback/volback/service"
)

// Verbs of Cinder's lifecycle (issue 9): quotas, snapshots, services,
// reset-state.
func lifecycleCommands() []*cli.Command {
	return []*cli.Command{
		{Name: "snapshot-create", Category: "snapshots", Usage: "snapshot a volume (RBD snapshot; reflink clone or sparse copy of an image file)", ArgsUsage: "VOLUME",
			Flags: []cli.Flag{&cli.StringFlag{Name: "name", Usage: "snapshot name"}, &cli.StringFlag{Name: "description", Usage: "free text"},
				&cli.BoolFlag{Name: "force", Usage: "snapshot a volume in use"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "VOLUME"); err != nil {
					return err
				}
				return call(c, "snapshot-create", service.SnapshotRequest{Volume: c.Args().First(), Name: c.String("name"),
					Description: c.String("description"), Force: c.Bool("force")}, &service.SnapshotView{})
			}},
		{Name: "snapshot-list", Category: "snapshots", Usage: "list snapshots, newest first",
			Flags: []cli.Flag{&cli.StringFlag{Name: "volume-id", Usage: "only snapshots of this volume"}, allProjectsFlag},
			Action: func(c *cli.Context) error {
				if err := args(c, 0, 0, "no arguments"); err != nil {
					return err
				}
				return call(c, "snapshot-list", service.Ref{Ref: c.String("volume-id"), AllProjects: c.Bool("all-projects")}, &[]service.SnapshotView{})
			}},
		refVerb("snapshot-show", "show a snapshot", "SNAPSHOT", "snapshots", &service.SnapshotView{}),
		refVerb("snapshot-delete", "delete a snapshot", "SNAPSHOT", "snapshots", &service.SnapshotView{}),
		{Name: "backup-reset-state", Category: "backups", Usage: "set a backup's status (admins only); stops a restore of it", ArgsUsage: "BACKUP",
			Flags: []cli.Flag{&cli.StringFlag{Name: "state", Value: "available", Usage: "available or error"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "BACKUP"); err != nil {
					return err
				}
				return call(c, "backup-reset-state", service.ResetStateRequest{Ref: c.Args().First(), State: c.String("state")}, &service.BackupView{})
			}},
		{Name: "service-list", Category: "mount and service", Usage: "backup services per availability zone (with their repository), volume drivers and the catalog owner",
			Action: func(c *cli.Context) error {
				if err := args(c, 0, 0, "no arguments"); err != nil {
					return err
				}
				return call(c, "service-list", service.Ref{}, &[]service.ServiceView{})
			}},
		serviceVerb("service-disable", "stop new backups and restores in an availability zone (admins only)", false),
		serviceVerb("service-enable", "accept new work in an availability zone again (admins only)", true),
		quotaVerb("quota-show", "show a project's backup quotas (default: your project)", &service.QuotaView{}),
		quotaVerb("quota-usage", "show a project's backup quota usage: in_use, reserved, limit", &[]service.QuotaUsage{}),
		{Name: "quota-update", Category: "projects and quotas", Usage: "set a project's backup quotas (admins only; -1 = unlimited)", ArgsUsage: "PROJECT",
			Flags: []cli.Flag{&cli.Int64Flag{Name: "backups", Usage: "number of backups"},
				&cli.Int64Flag{Name: "backup-gigabytes", Usage: "GiB of backups (volume sizes)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "PROJECT"); err != nil {
					return err
				}
				req := service.QuotaRequest{Project: c.Args().First()}
				if c.IsSet("backups") {
					v := c.Int64("backups")
					req.Backups = &v
				}
				if c.IsSet("backup-gigabytes") {
					v := c.Int64("backup-gigabytes")
					req.BackupGigabytes = &v
				}
				return call(c, "quota-update", req, &service.QuotaView{})
			}},
	}
}

func quotaVerb(name, usage string, resp any) *cli.Command {
	return &cli.Command{Name: name, Usage: usage, ArgsUsage: "[PROJECT]", Category: "projects and quotas", Action: func(c *cli.Context) error {
		if err := args(c, 0, 1, "[PROJECT]"); err != nil {
			return err
		}
		return call(c, name, service.QuotaRequest{Project: c.Args().First()}, resp)
	}}
}

func serviceVerb(name, usage string, enable bool) *cli.Command {
	var flags []cli.Flag
	if !enable {
		flags = []cli.Flag{&cli.StringFlag{Name: "reason", Usage: "why (shown by service-list and in refusals)"}}
	}
	return &cli.Command{Name: name, Usage: usage, ArgsUsage: "ZONE", Flags: flags, Category: "mount and service", Action: func(c *cli.Context) error {
		if err := args(c, 1, 1, "ZONE"); err != nil {
			return err
		}
		return call(c, name, service.ServiceRequest{Zone: c.Args().First(), Reason: c.String("reason")}, &service.ServiceView{})
	}}
}
