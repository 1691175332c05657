package api

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/volback/volback/service"
)

// Server is the HTTP API of the process that owns the catalog: the Cinder
// v3 API under /v3/, version discovery at /, the native calls of the CLI
// (--os-endpoint) under /volback/v1/, and /metrics. Backups and restores
// it starts run in the background on a bounded pool of workers.
type Server struct {
	s       *service.Service
	auth    authenticator
	log     *log.Logger
	native  *rpc
	metrics http.Handler

	pool chan struct{}      // a slot per running background job
	base context.Context    // cancelled by Close: background jobs stop
	stop context.CancelFunc // cancels base
	jobs sync.WaitGroup     // background jobs
}

// NewServer serves s over HTTP with the [api] settings of its
// configuration; it logs background jobs' failures and its own to logger
// (stderr when nil).
func NewServer(s *service.Service, logger *log.Logger) (*Server, error) {
	cfg := s.Config().API
	var auth authenticator = noauth{}
	if cfg.AuthStrategy == "tokens" || (cfg.AuthStrategy == "" && cfg.TokenFile != "") {
		tf, err := newTokenFile(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		auth = tf
	}
	jobs := cfg.Jobs
	if jobs <= 0 {
		jobs = 4
	}
	if logger == nil {
		logger = log.New(os.Stderr, "volback: ", 0)
	}
	h := &Server{s: s, auth: auth, log: logger, pool: make(chan struct{}, jobs)}
	h.base, h.stop = context.WithCancel(context.Background())
	h.native = &rpc{s: s, auth: func(r *http.Request) (context.Context, error) {
		id, err := h.identify(r)
		if err != nil {
			return nil, err
		}
		if p := r.Header.Get(projectHeader); p != "" && p != id.Project {
			// As through the socket: an admin may act for another project.
			if !id.Admin() {
				return nil, service.Errorf(service.ErrForbidden, "%s is a member of project %s and cannot act for project %s; only an admin can (--os-project-id)",
					id, id.Project, p)
			}
			if err := service.CheckProject(p); err != nil {
				return nil, err
			}
			id.Project = p
		}
		return service.WithIdentity(r.Context(), id), nil
	}}
	h.metrics = metricsHandler(h.registry())
	return h, nil
}

// CheckListen refuses to serve noauth on an address other hosts reach
// unless volback.toml asks for noauth explicitly: noauth believes any
// USER:PROJECT it is sent.
func CheckListen(cfg service.Config, addr string) error {
	if cfg.API.AuthStrategy != "" || cfg.API.TokenFile != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %v; give HOST:PORT such as 127.0.0.1:8776", addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("--listen %s: without a token file the API uses noauth, which trusts whatever user and project a request names, so it listens on a loopback address only; set [api] token_file in volback.toml (or auth_strategy = \"noauth\" on a trusted network)", addr)
}

// ServeHTTP routes one request.
func (h *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/" || p == "":
		h.versions(w, r, http.StatusMultipleChoices)
	case p == "/v3" || p == "/v3/":
		h.versions(w, r, http.StatusOK)
	case p == "/metrics":
		h.metrics.ServeHTTP(w, r)
	case strings.HasPrefix(p, "/volback/v1/"):
		h.native.ServeHTTP(w, r)
	case strings.HasPrefix(p, "/v3/"):
		h.cinder(w, r)
	default:
		writeJSON(w, http.StatusNotFound, fault(http.StatusNotFound, fmt.Sprintf("The resource could not be found: %s (the API is under /v3/)", p)))
	}
}

// identify authenticates a request by its X-Auth-Token.
func (h *Server) identify(r *http.Request) (service.Identity, error) {
	tok := r.Header.Get("X-Auth-Token")
	if tok == "" {
		return service.Identity{}, unauthorized("no X-Auth-Token: %s", h.auth.hint())
	}
	return h.auth.identify(tok)
}

// background runs a Background operation as a job of its own, detached
// from the request: it returns the view the service accepted the job with
// (accepted true) as soon as it has one, or the operation's result or
// error if it ended first (a refusal). The accepted job waits for a
// worker of the pool, then runs; Close cancels it.
func (h *Server) background(ctx context.Context, o *Op, req any) (v any, accepted bool, err error) {
	jctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	unlink := context.AfterFunc(h.base, cancel)
	acc := make(chan any, 1)
	// The service calls back on the job's goroutine, so these need no lock.
	held, was := false, false // the job holds a worker; it was accepted
	onAccept := func(ctx context.Context, view any) {
		was = true
		acc <- view
		select {
		case h.pool <- struct{}{}:
			held = true
		case <-ctx.Done(): // cancelled while waiting: the job fails at once
		}
	}
	type result struct {
		v   any
		err error
	}
	done := make(chan result, 1)
	h.jobs.Add(1)
	go func() {
		defer h.jobs.Done()
		defer unlink()
		defer cancel()
		v, err := observe(jctx, o, onAccept, func(ctx context.Context) (any, error) { return o.call(h.s, ctx, req, nil) })
		if held {
			<-h.pool
		}
		if err != nil && was { // the caller has its 202; the record says how it ended
			h.log.Printf("api: %s (background): %v", o.Verb, err)
		}
		done <- result{v, err}
	}()
	select {
	case v := <-acc:
		return v, true, nil
	case r := <-done:
		select {
		case v := <-acc: // accepted, then ended at once: its record says how
			return v, true, nil
		default:
			return r.v, false, r.err
		}
	}
}

// Close stops the background jobs (they roll back as a cancelled job
// does) and waits for them and for native calls in progress.
func (h *Server) Close() {
	h.stop()
	h.jobs.Wait()
	h.native.wg.Wait()
}

// Serve answers on ln until ctx is done, then shuts down: no new
// requests, a few seconds for those in flight, background jobs cancelled
// and waited for. It returns once all is quiet, so the caller may close
// the service.
func (h *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return h.base }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		srv.Close() // long native calls: their contexts end, they roll back
	}
	h.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
