package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/index"
)

// version and commit are set at link time by `make build` (-ldflags
// "-X main.version=... -X main.commit=..."); without them the build info's
// module version and VCS stamp are used.
var version, commit string

// VersionView is what `volback version` prints.
type VersionView struct {
	Version          string `json:"version"`
	Commit           string `json:"commit"`
	CommitTime       string `json:"commit_time,omitempty"`
	Modified         bool   `json:"modified"` // built from a work tree with uncommitted changes
	GoVersion        string `json:"go_version"`
	Platform         string `json:"platform"`
	RepositoryFormat int    `json:"repository_format"` // read and written (docs/FORMAT.md)
	CatalogSchema    int    `json:"catalog_schema"`    // read and written (docs/CATALOG.md)
}

func versionCommand() *cli.Command {
	return &cli.Command{Name: "version", Usage: "print the version, commit, Go version and the format versions read and written",
		Category: "help",
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			v := buildVersion()
			if c.String("format") == "json" {
				return printOut(c, v)
			}
			_, err := fmt.Print(v.text())
			return err
		}}
}

// text is the version as `volback --version` prints it.
func (v VersionView) text() string {
	commit := v.Commit
	if v.CommitTime != "" {
		commit += " of " + v.CommitTime
	}
	if v.Modified {
		commit += ", with uncommitted changes"
	}
	return fmt.Sprintf("volback %s\ncommit %s\nbuilt with %s for %s\nreads repository formats 1 to %d and writes repository format %d (segmented manifests, encrypted or not; a format 1 or 2 repository is upgraded by its first backup), catalog schema %d\n",
		v.Version, commit, v.GoVersion, v.Platform, v.RepositoryFormat, v.RepositoryFormat, v.CatalogSchema)
}

func buildVersion() VersionView {
	v := VersionView{Version: version, Commit: commit, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, RepositoryFormat: chunkstore.FormatVersion,
		CatalogSchema: index.SchemaVersion}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && v.Commit == "":
				v.Commit = s.Value
			case s.Key == "vcs.time":
				v.CommitTime = s.Value
			case s.Key == "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Commit == "" {
		v.Commit = "unknown (built without VCS information; `make build` stamps it)"
	}
	return v
}
