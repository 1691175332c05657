package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/volback/volback/index"
)

// SocketPath is where the owner of the catalog in home answers the API.
// Unix socket paths are limited to 108 bytes, so a long home gets a socket
// in the temp directory named after the home's hash.
func SocketPath(home string) string {
	p := filepath.Join(home, "volback.sock")
	if len(p) < 100 {
		return p
	}
	h := sha256.Sum256([]byte(home))
	return filepath.Join(os.TempDir(), "volback-"+hex.EncodeToString(h[:8])+".sock")
}

// Connect returns a Caller for the catalog in cfg.Home: a client of the
// process that owns it if one answers on the socket, else this process
// becomes the owner and serves the socket until Close.
func Connect(ctx context.Context, cfg Config, logger *log.Logger) (Caller, error) {
	sock := SocketPath(cfg.Home)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := dial(sock); err == nil {
			return c, nil
		}
		s, err := Open(ctx, cfg, logger)
		if err == nil {
			return serveOwner(s, sock)
		}
		if !errors.Is(err, index.ErrLocked) || time.Now().After(deadline) {
			if errors.Is(err, index.ErrLocked) {
				return nil, fmt.Errorf("%w; it does not answer on %s: if no volback process is running, remove the stale lock", err, sock)
			}
			return nil, err
		}
		time.Sleep(100 * time.Millisecond) // the owner is starting or just leaving
	}
}

// owner is a Local caller that also serves other volback processes.
type owner struct {
	Local
	srv  *http.Server
	ln   net.Listener
	sock string
	done chan struct{}
}

func serveOwner(s *Service, sock string) (Caller, error) {
	os.Remove(sock) // we hold the catalog lock, so a socket file here is stale
	ln, err := net.Listen("unix", sock)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("serving the API on %s: %v", sock, err)
	}
	os.Chmod(sock, 0o600)
	o := &owner{Local: Local{s}, ln: ln, sock: sock, done: make(chan struct{})}
	o.srv = &http.Server{Handler: http.HandlerFunc(o.serveHTTP)}
	go func() { o.srv.Serve(ln); close(o.done) }()
	return o, nil
}

// Close stops accepting calls, lets calls in progress finish, then closes
// the catalog.
func (o *owner) Close() error {
	o.srv.Shutdown(context.Background())
	<-o.done
	os.Remove(o.sock)
	return o.Local.Close()
}

// line is one NDJSON line of a response: progress reports, then a result or
// an error.
type line struct {
	Progress *Progress       `json:"progress,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
}

func (o *owner) serveHTTP(w http.ResponseWriter, r *http.Request) {
	verb := strings.TrimPrefix(r.URL.Path, "/v1/")
	h, ok := handlers[verb]
	if !ok || r.Method != http.MethodPost {
		http.Error(w, "unknown verb "+verb, http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	send := func(l line) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(l)
		if flusher != nil {
			flusher.Flush()
		}
	}
	out, err := h(o.S, r.Context(), body, func(p Progress) { send(line{Progress: &p}) })
	if err != nil {
		send(line{Error: err.Error()})
		return
	}
	raw, err := json.Marshal(out)
	if err != nil {
		send(line{Error: err.Error()})
		return
	}
	send(line{Result: raw})
}

// Remote calls the owner of the catalog over its socket.
type Remote struct {
	client *http.Client
}

func dial(sock string) (*Remote, error) {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return nil, err
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &Remote{client: &http.Client{Transport: tr}}, nil
}

// Call sends verb to the owner; cancelling ctx cancels the call there.
func (r *Remote) Call(ctx context.Context, verb string, req, resp any, p ProgressFunc) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://volback/v1/"+verb, bytes.NewReader(body))
	if err != nil {
		return err
	}
	res, err := r.client.Do(hreq)
	if err != nil {
		return fmt.Errorf("calling the volback process that owns the catalog: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(res.Body)
		return fmt.Errorf("%s: %s", verb, strings.TrimSpace(string(msg)))
	}
	dec := json.NewDecoder(res.Body)
	for {
		var l line
		if err := dec.Decode(&l); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("the volback process that owns the catalog went away during %s: %v", verb, err)
		}
		switch {
		case l.Progress != nil:
			p.report(*l.Progress)
		case l.Error != "":
			return errors.New(l.Error)
		default:
			if resp == nil {
				return nil
			}
			return json.Unmarshal(l.Result, resp)
		}
	}
}

// Close releases idle connections.
func (r *Remote) Close() error {
	r.client.CloseIdleConnections()
	return nil
}
