package main

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/api"
	"github.com/volback/volback/chunkstore"
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
	cfg.Password = service.PasswordFrom(c.Context) // an owner this process becomes unlocks with it too
	kdf := int64(0)
	if cfg.Password != nil {
		kdf = int64(chunkstore.KDF.MemoryKiB) << 10 // argon2id's memory while it unlocks
	}
	setMemoryLimit(cfg.MemoryLimit() + extraMemory + kdf)
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
	pw, err := readPassword(c.String("password-file"), "VOLBACK_PASSWORD", "--password-file")
	if err != nil {
		return err
	}
	// The passphrase rides on the context of every call: to the owner in
	// this process, or over the private socket (never argv, never logged).
	c.Context = service.WithPassword(c.Context, pw)
	return nil
}

// readPassword reads a passphrase from file (when given) or from the
// environment variable env; one trailing newline is dropped, so
// `echo secret > file` works. An empty one is refused; none at all is nil.
func readPassword(file, env, flag string) ([]byte, error) {
	var b []byte
	if file != "" {
		var err error
		if b, err = os.ReadFile(file); err != nil {
			return nil, fmt.Errorf("%s: %v; give a readable file holding the repository passphrase", flag, err)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return nil, fmt.Errorf("%s %s is empty; put the repository passphrase in it", flag, file)
		}
	} else if v, ok := os.LookupEnv(env); ok {
		if strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("%s is set but empty; put the repository passphrase in it, or unset it", env)
		}
		b = []byte(v)
	} else {
		return nil, nil
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r")), nil
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
