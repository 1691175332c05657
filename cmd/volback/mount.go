package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"runtime/debug"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/fs"
	"github.com/volback/volback/service"
)

func mountCommand() *cli.Command {
	return &cli.Command{Name: "mount", Usage: "show every backup as a read-only image file (foreground)", ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "allow-other", Usage: "let other users read the mount"},
			&cli.StringFlag{Name: "cache-size", Value: "256M", Usage: "decoded-chunk cache shared by all open images"}},
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 1, "MOUNTPOINT"); err != nil {
				return err
			}
			cache, err := service.ParseSize(c.String("cache-size"))
			if err != nil {
				return usageError{err}
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				debug.SetMemoryLimit(softMemoryLimit + cache)
			}
			caller, err := connect(c)
			if err != nil {
				return err
			}
			defer caller.Close()
			if s, ok := caller.(*service.Session); ok {
				s.ReportHandovers(log.New(os.Stderr, "volback mount: ", log.LstdFlags))
			}
			src := service.NewMountSource(caller, cache)
			defer src.Close()
			srv, err := fs.Mount(c.Args().First(), src, fs.Options{AllowOther: c.Bool("allow-other"),
				Logger: log.New(os.Stderr, "volback mount: ", log.LstdFlags)})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "volback: backups mounted at %s (by-id/, by-volume/); Ctrl-C or 'volback umount %s' to stop\n",
				srv.Mountpoint(), srv.Mountpoint())
			go func() {
				<-c.Context.Done()
				if err := srv.Unmount(); err != nil {
					// Busy (open files, loop devices): detach lazily so the
					// tree is gone now; serving ends when the last user closes.
					fmt.Fprintf(os.Stderr, "volback: %v\n", err)
					lazyWarning(fs.Unmount(srv.Mountpoint()))
				}
			}()
			srv.Wait()
			return nil
		}}
}

func umountCommand() *cli.Command {
	return &cli.Command{Name: "umount", Usage: "unmount a volback mount", ArgsUsage: "MOUNTPOINT",
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 1, "MOUNTPOINT"); err != nil {
				return err
			}
			return lazyWarning(fs.Unmount(c.Args().First()))
		}}
}

// lazyWarning turns a lazy detach into a warning: the mount is gone from
// the tree, which is what the user asked for, so the exit status is 0.
func lazyWarning(err error) error {
	if errors.Is(err, fs.ErrLazyUnmount) {
		fmt.Fprintf(os.Stderr, "volback: warning: %v\n", err)
		return nil
	}
	return err
}

// serveCommand owns the catalog and answers other volback processes until
// interrupted.
func serveCommand() *cli.Command {
	return &cli.Command{Name: "serve", Usage: "own the catalog and serve the API on the home's socket (foreground)",
		Action: func(c *cli.Context) error {
			cfg, err := homeConfig(c)
			if err != nil {
				return err
			}
			cfg.LogStderr = true // state changes on the terminal too
			s, err := service.Own(c.Context, cfg, log.New(os.Stderr, "volback: ", 0), 10*time.Second)
			if err != nil {
				return err
			}
			defer s.Close()
			fmt.Fprintln(os.Stderr, "volback: serving; Ctrl-C to stop")
			<-c.Context.Done()
			return nil
		}}
}
