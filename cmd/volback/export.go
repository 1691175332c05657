package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/service"
)

func exportCommand() *cli.Command {
	return &cli.Command{Name: "backup-export", Usage: "print the backup_service and backup_url that backup-import needs", ArgsUsage: "BACKUP",
		Category: "backups",
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 1, "BACKUP"); err != nil {
				return err
			}
			caller, err := connect(c)
			if err != nil {
				return err
			}
			defer caller.Close()
			var ex service.ExportView
			if err := caller.Call(c.Context, "backup-export", service.Ref{Ref: c.Args().First()}, &ex, nil); err != nil {
				return err
			}
			if c.String("format") == "json" {
				return printOut(c, ex)
			}
			// The URL is a few hundred characters: in a table cell it wraps
			// into the borders. Each value alone on its line copies cleanly.
			_, err = fmt.Fprintf(os.Stdout, "backup_service:\n%s\n\nbackup_url:\n%s\n", ex.BackupService, ex.BackupURL)
			return err
		}}
}

func importCommand() *cli.Command {
	return &cli.Command{Name: "backup-import", Usage: "register an exported backup (its data must be in a configured repository)",
		ArgsUsage: "BACKUP_SERVICE BACKUP_URL", Category: "backups",
		Action: func(c *cli.Context) error {
			if err := args(c, 2, 2, "BACKUP_SERVICE BACKUP_URL"); err != nil {
				return err
			}
			return call(c, "backup-import", service.ImportRequest{BackupService: c.Args().Get(0), BackupURL: c.Args().Get(1)},
				&service.BackupView{})
		}}
}

func rebuildCommand() *cli.Command {
	return &cli.Command{Name: "catalog-rebuild", Usage: "rebuild an empty catalog from the repositories' records, manifests and packs",
		Category: "repositories",
		Flags:    []cli.Flag{&cli.StringFlag{Name: "repository", Usage: "only this configured repository `URL`"}},
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			var rep service.RebuildReport
			if err := call(c, "catalog-rebuild", service.RebuildRequest{Repository: c.String("repository")}, &rep); err != nil {
				return err
			}
			for _, p := range rep.Problems {
				fmt.Fprintf(os.Stderr, "volback: %s\n", p)
			}
			if len(rep.Problems) > 0 {
				return fmt.Errorf("catalog-rebuild imported %d of %d backup(s) and found %d problem(s); see above",
					rep.BackupsImported, rep.Backups, len(rep.Problems))
			}
			return nil
		}}
}
