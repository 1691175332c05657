package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/volback/volback/api"
	"github.com/volback/volback/fs"
	"github.com/volback/volback/service"
)

func mountCommand() *cli.Command {
	return &cli.Command{Name: "mount", Usage: "show every backup as a read-only image file (foreground)", ArgsUsage: "MOUNTPOINT",
		Category: "mount and service",
		Description: "Backups appear as by-id/ID.img and by-volume/VOLUME/TIME_NAME.img; two volumes with the same name get VOLUME and VOLUME-IDPREFIX. " +
			"Ctrl-C (or SIGTERM) unmounts; while files or loop devices on it are open the mount stays and says so, as umount(8) would. " +
			"Images are page-cached unless --direct-io; that speeds up large sequential reads but slows small scattered ones (a loop-mounted file system's).",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "allow-other", Usage: "let other users read the mount"},
			&cli.StringFlag{Name: "cache-size", Value: "256M", Usage: "decoded-chunk cache `SIZE` shared by all open images"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "serve the cache's hits and misses at http://`HOST:PORT`/metrics (Prometheus)"},
			// Opt-in: it speeds up sequential reads but slows small-file
			// reads of a loop-mounted image (docs/BENCHMARKS.md, W6 warm notes).
			&cli.BoolFlag{Name: "direct-io",
				Usage: "read images past the page cache (FUSE direct IO; mmap still works); needs Linux 6.6 or later, else images stay page-cached"}},
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 1, "MOUNTPOINT"); err != nil {
				return err
			}
			cache, err := service.ParseSize(c.String("cache-size"))
			if err != nil {
				return usageError{err, c.Command.Name}
			}
			dir, err := absPath(c.Args().First())
			if err != nil {
				return err
			}
			extraMemory = cache
			caller, err := connect(c)
			if err != nil {
				return err
			}
			defer caller.Close()
			if s, ok := caller.(*api.Session); ok {
				s.ReportHandovers(log.New(os.Stderr, "volback mount: ", log.LstdFlags))
			}
			logger := log.New(os.Stderr, "volback mount: ", log.LstdFlags)
			src := service.NewMountSource(caller, cache)
			src.Password, src.Log = service.PasswordFrom(c.Context), logger
			defer src.Close()
			if addr := c.String("metrics-listen"); addr != "" {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return fmt.Errorf("--metrics-listen %s: %v; pick another address", addr, err)
				}
				msrv := &http.Server{Handler: api.MountMetrics(src), ReadHeaderTimeout: 10 * time.Second}
				go msrv.Serve(ln)
				defer msrv.Close()
			}
			srv, err := fs.Mount(dir, src, fs.Options{AllowOther: c.Bool("allow-other"), Logger: logger, DirectIO: c.Bool("direct-io")})
			if err != nil {
				return err
			}
			if c.Bool("direct-io") && !srv.DirectIO() {
				logger.Printf("--direct-io: this kernel does not allow mmap of direct-IO FUSE files (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6+); images are page-cached")
			}
			fmt.Fprintf(os.Stderr, "volback: backups mounted at %s (by-id/, by-volume/); Ctrl-C or 'volback umount %s' to stop\n",
				srv.Mountpoint(), srv.Mountpoint())
			// Every Ctrl-C or SIGTERM tries to unmount. A busy mount stays
			// (as umount(8) refuses it) and says what to do; only
			// `volback umount --lazy` detaches it with users left.
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			go func() {
				for range sigs {
					err := srv.Unmount()
					if err == nil {
						return
					}
					fmt.Fprintf(os.Stderr, "volback: still mounted: %v\n", err)
				}
			}()
			srv.Wait()
			return nil
		}}
}

func umountCommand() *cli.Command {
	return &cli.Command{Name: "umount", Usage: "unmount a volback mount (refused while busy unless --lazy)", ArgsUsage: "MOUNTPOINT",
		Category:    "mount and service",
		Description: "Only volback's own FUSE mounts are unmounted; anything else at MOUNTPOINT is refused.",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "lazy", Aliases: []string{"l"},
			Usage: "detach a busy mount now (umount -l); open files keep reading it and the mount process exits when they close"}},
		Action: func(c *cli.Context) error {
			if err := args(c, 1, 1, "MOUNTPOINT"); err != nil {
				return err
			}
			return lazyWarning(fs.Unmount(c.Args().First(), c.Bool("lazy")))
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
// interrupted; with --listen (or [api] listen) it also serves the HTTP API.
func serveCommand() *cli.Command {
	return &cli.Command{Name: "serve", Usage: "own the catalog and serve the API on the home's socket and, with --listen, over HTTP (foreground)",
		Category: "mount and service",
		Description: "With --listen HOST:PORT (or listen in volback.toml's [api] table) it also serves Cinder's v3 block-storage API " +
			"(backups, volumes, snapshots, quotas, services; docs/API.md), the native calls of volback --os-endpoint, and /metrics. " +
			"Without a token file the API uses Cinder's noauth and listens on a loopback address only.",
		Flags: []cli.Flag{&cli.StringFlag{Name: "listen", Usage: "serve HTTP on `HOST:PORT` (Cinder's port is 8776)"}},
		Action: func(c *cli.Context) error {
			if err := args(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			cfg, err := homeConfig(c)
			if err != nil {
				return err
			}
			cfg.LogStderr = true // state changes on the terminal too
			addr := cfg.API.Listen
			if c.IsSet("listen") {
				addr = c.String("listen")
			}
			var ln net.Listener
			if addr != "" {
				if err := api.CheckListen(cfg, addr); err != nil {
					return err
				}
				if ln, err = net.Listen("tcp", addr); err != nil {
					return fmt.Errorf("serving HTTP on %s: %v; pick another --listen address", addr, err)
				}
				defer ln.Close()
			}
			logger := log.New(os.Stderr, "volback: ", 0)
			s, err := api.Own(c.Context, cfg, logger, 10*time.Second)
			if err != nil {
				return err
			}
			defer s.Close()
			if ln == nil {
				fmt.Fprintln(os.Stderr, "volback: serving; Ctrl-C to stop")
				<-c.Context.Done()
				return nil
			}
			srv, err := api.NewServer(s.LocalService(), logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "volback: serving the socket and http://%s/v3 (Cinder v3 API), /metrics; Ctrl-C to stop\n", ln.Addr())
			return srv.Serve(c.Context, ln)
		}}
}
