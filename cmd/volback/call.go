package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/api"
	"github.com/volback/volback/service"
)

// extraMemory is added to the configuration's memory limit (mount's cache).
var extraMemory int64

// connect loads the config of the home, sizes the soft memory limit from it
// and returns a caller: a client of the catalog's owner, or this process as
// the owner. Either way it follows hand-overs when the owner exits. With
// --os-endpoint it calls that volback serve over HTTP instead.
func connect(c *cli.Context) (service.Caller, error) {
	if ep := c.String("os-endpoint"); ep != "" { // a remote volback serve
		return api.DialHTTP(ep, os.Getenv("OS_AUTH_TOKEN"), os.Getenv("OS_USER_ID"), project(c))
	}
	cfg, err := homeConfig(c)
	if err != nil {
		return nil, err
	}
	return api.Connect(c.Context, cfg, log.New(os.Stderr, "volback: ", 0))
}

// homeConfig loads the config of the chosen home, with the global flags
// it carries, and sizes this process's soft memory limit from it (the
// process may become the catalog's owner and do the work).
func homeConfig(c *cli.Context) (service.Config, error) {
	home := c.String("home")
	if home == "" {
		home = service.DefaultHome()
	}
	cfg, err := service.LoadConfig(home)
	if err != nil {
		return cfg, err
	}
	cfg.PasswordFile = c.String("password-file")
	setMemoryLimit(cfg.MemoryLimit() + extraMemory)
	return cfg, nil
}

// call runs verb and prints its result in the chosen format.
func call(c *cli.Context, verb string, req, resp any) error {
	caller, err := connect(c)
	if err != nil {
		return err
	}
	defer caller.Close()
	bar := newBar(c)
	err = caller.Call(service.WithProject(c.Context, project(c)), verb, req, resp, bar.update)
	bar.finish()
	if err != nil {
		return err
	}
	return printOut(c, resp, createdFields[verb]...)
}

// printOut prints v on stdout in the format of -f; only, when set, limits
// a record's table to those properties.
func printOut(c *cli.Context, v any, only ...string) error {
	return print(os.Stdout, c.String("format"), v, only...)
}

// checkGlobals checks the global flags that need more than parsing: the
// output format, the two spellings of the project, the password file.
func checkGlobals(c *cli.Context) error {
	if f := c.String("format"); f != "table" && f != "json" {
		return usageError{fmt.Errorf("unknown --format %q: use table or json", f), ""}
	}
	if c.IsSet("os-project-id") && c.IsSet("project") && c.String("os-project-id") != c.String("project") {
		return usageError{fmt.Errorf("--project %q and --os-project-id %q disagree; give one of them", c.String("project"), c.String("os-project-id")), ""}
	}
	if p := c.String("password-file"); p != "" {
		// Reserved for encrypted repositories: read now so a wrong path is
		// found today, not when encryption arrives.
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("--password-file: %v; give a readable file holding the repository password", err)
		}
		if strings.TrimSpace(string(b)) == "" {
			return fmt.Errorf("--password-file %s is empty; put the repository password in it", p)
		}
	}
	return nil
}

// project is the project acting: --os-project-id (Cinder's spelling) or
// --project.
func project(c *cli.Context) string {
	if c.IsSet("os-project-id") {
		return c.String("os-project-id")
	}
	return c.String("project")
}

// absPath makes a path argument absolute in the caller's directory before
// it is sent, so that an owner started elsewhere never resolves it in its
// own. URLs (rbd://pool/image) and "" pass unchanged.
func absPath(p string) (string, error) {
	if p == "" || strings.Contains(p, "://") {
		return p, nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("path %s: %v", p, err)
	}
	return abs, nil
}
