package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/service"
)

// repoCommands are the verbs of repositories as objects: create, list,
// show, and the keys of encrypted ones.
func repoCommands() []*cli.Command {
	return []*cli.Command{
		{Name: "repo-init", Usage: "create a repository (encrypted by default) and register it in a zone under a name", ArgsUsage: "URL", Category: "repositories",
			Description: "The first repository of a zone becomes the zone's repository; another is a container of the zone that backup-create --container NAME writes to. " +
				"An encrypted repository's passphrase comes from --password-file FILE or VOLBACK_PASSWORD, never from the command line.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "availability-zone", Usage: "zone `AZ` the repository serves (default: the default zone)"},
				&cli.StringFlag{Name: "name", Usage: "container `NAME` (needed unless it becomes the zone's repository)"},
				&cli.StringFlag{Name: "encryption", Usage: "`CIPHER`: " + service.DefaultEncryption + " (default), chacha20-poly1305, or none"},
				&cli.StringFlag{Name: "chunk-size", Usage: "chunk `SIZE` (16K..4M, power of two; default: chunk_size of volback.toml)"},
				&cli.StringFlag{Name: "compression", Usage: "zstd `LEVEL` 1-22, or 0 for none, for backups into it (default: compression_level)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 1, "URL"); err != nil {
					return err
				}
				req := service.RepoInitRequest{URL: repoURL(c.Args().First()), Zone: c.String("availability-zone"), Name: c.String("name"),
					Encryption: c.String("encryption"), ChunkSize: c.String("chunk-size")}
				if c.IsSet("compression") {
					l, err := strconv.Atoi(c.String("compression"))
					if err != nil {
						return usageError{fmt.Errorf("--compression %q: a zstd level 1-22, or 0", c.String("compression")), c.Command.Name}
					}
					req.CompressionLevel = &l
				}
				return call(c, "repo-init", req, &service.RepositoryView{})
			}},
		{Name: "repo-list", Usage: "list the repositories (containers)", Category: "repositories", Action: func(c *cli.Context) error {
			if err := args(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			return call(c, "repo-list", service.Ref{}, &[]service.RepositoryView{})
		}},
		{Name: "repo-show", Usage: "show a repository", ArgsUsage: "REPOSITORY", Category: "repositories", Action: func(c *cli.Context) error {
			if err := args(c, 1, 1, "REPOSITORY"); err != nil {
				return err
			}
			return call(c, "repo-show", service.Ref{Ref: c.Args().First()}, &service.RepositoryView{})
		}},
		{Name: "repo-key", Usage: "manage the passphrases of an encrypted repository: add, list, remove KEY, passwd", ArgsUsage: "add|list|remove KEY|passwd", Category: "repositories",
			Description: "add and passwd read the new passphrase from --new-password-file FILE or VOLBACK_NEW_PASSWORD; the current one (--password-file or VOLBACK_PASSWORD) unlocks the repository. " +
				"No data is rewritten: a key only wraps the repository's master key.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "repository", Usage: "`REPOSITORY` name, URL or id (default: the default zone's)"},
				&cli.StringFlag{Name: "new-password-file", Usage: "read the new passphrase from `FILE` (else VOLBACK_NEW_PASSWORD)"}},
			Action: func(c *cli.Context) error {
				if err := args(c, 1, 2, "add|list|remove KEY|passwd"); err != nil {
					return err
				}
				req := service.RepoKeyRequest{Action: c.Args().First(), Repository: c.String("repository"), KeyID: c.Args().Get(1)}
				switch req.Action {
				case "add", "passwd":
					pw, err := readPassword(c.String("new-password-file"), "VOLBACK_NEW_PASSWORD", "--new-password-file")
					if err != nil {
						return err
					}
					if pw == nil {
						return usageError{fmt.Errorf("repo-key %s: give the new passphrase with --new-password-file FILE or VOLBACK_NEW_PASSWORD", req.Action), c.Command.Name}
					}
					req.NewPassword = pw
				case "list":
				case "remove":
					if req.KeyID == "" {
						return usageError{fmt.Errorf("repo-key remove: name the KEY to remove (repo-key list shows them)"), c.Command.Name}
					}
				default:
					return usageError{fmt.Errorf("repo-key %q: use add, list, remove KEY or passwd", req.Action), c.Command.Name}
				}
				return call(c, "repo-key", req, &[]chunkstore.KeyInfo{})
			}},
	}
}

// repoURL makes a plain path a file:// URL of its absolute form.
func repoURL(s string) string {
	if s == "" || strings.Contains(s, "://") {
		return s
	}
	if abs, err := absPath(s); err == nil {
		return "file://" + abs
	}
	return s
}
