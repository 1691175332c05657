package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/volback/volback/service"
	"golang.org/x/sys/unix"
)

// owner is a Local caller that also serves other volback processes.
type owner struct {
	Local
	dir  *socketDir // the Session's; not closed here
	srv  *http.Server
	done chan struct{}
}

// serveOwner serves s on dir's socket; on failure it closes s.
func serveOwner(s *service.Service, dir *socketDir) (*owner, error) {
	if err := dir.share(s.Config().Home); err != nil {
		s.Close()
		return nil, err
	}
	ln, err := dir.listen()
	if err != nil {
		s.Close()
		return nil, err
	}
	o := &owner{Local: Local{s}, dir: dir, done: make(chan struct{})}
	h := &rpc{s: s, auth: func(r *http.Request) (context.Context, error) { return socketIdentity(s, r) }}
	o.srv = &http.Server{Handler: h, ConnContext: withPeer}
	go func() { o.srv.Serve(ln); close(o.done) }()
	return o, nil
}

// Close stops accepting calls, lets calls in progress finish, removes the
// socket and then closes the catalog (in that order: while we hold the
// catalog lock nobody else can have made a new socket).
func (o *owner) Close() error {
	o.srv.Shutdown(context.Background())
	<-o.done
	o.dir.removeSocket()
	return o.Local.Close()
}

type peerKey struct{}

// withPeer records the client's credentials with its connection.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	cred, err := peerCred(c)
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, cred)
}

// projectHeader carries the project a socket client asks to act for.
const projectHeader = "Volback-Project"

// passwordHeader carries the caller's repository passphrase (base64) to
// the owner over the private socket only (never over HTTP, never in argv
// or the request body the owner could log); the owner unlocks an
// encrypted repository with it when a call needs one (service/keys.go).
const passwordHeader = "Volback-Password"

// socketIdentity is the identity of a socket client: its uid (by
// SO_PEERCRED) mapped by [users], acting for the project it asks for.
func socketIdentity(s *service.Service, r *http.Request) (context.Context, error) {
	cfg := s.Config()
	cred, _ := r.Context().Value(peerKey{}).(*unix.Ucred)
	if cred == nil || !(trustedUID(cred.Uid) || cfg.HasUser(int(cred.Uid))) {
		uid := "unknown"
		if cred != nil {
			uid = fmt.Sprint(cred.Uid)
		}
		as := "root"
		if os.Geteuid() != 0 {
			as = fmt.Sprintf("uid %d or root", os.Geteuid())
		}
		return nil, service.Errorf(service.ErrForbidden, "the volback process that owns the catalog in %s (pid %d) runs as uid %d and refuses calls from uid %s: run volback as %s, or use a home of your own (--home), or have an admin add the user to [users] in %s",
			cfg.Home, os.Getpid(), os.Geteuid(), uid, as, filepath.Join(cfg.Home, service.ConfigName))
	}
	ctx := r.Context()
	if p := r.Header.Get(projectHeader); p != "" {
		ctx = service.WithProject(ctx, p)
	}
	if p := r.Header.Get(passwordHeader); p != "" {
		if pw, err := base64.StdEncoding.DecodeString(p); err == nil {
			ctx = service.WithPassword(ctx, pw)
		}
	}
	return s.Authenticate(ctx, int(cred.Uid))
}

// line is one NDJSON line of a native call's response: progress reports,
// then a result or an error.
type line struct {
	Progress *service.Progress `json:"progress,omitempty"`
	Result   json.RawMessage   `json:"result,omitempty"`
	Error    string            `json:"error,omitempty"`
	Kind     string            `json:"kind,omitempty"` // the error's kind (service.KindOf)
}

// kindHeader carries the kind of an error answered before the call was
// accepted (authentication, an unknown verb).
const kindHeader = "Volback-Error-Kind"

// rpc answers native calls, POST <prefix>/v1/VERB with the request as
// JSON, for the socket and for HTTP clients (cmd --os-endpoint).
type rpc struct {
	s *service.Service
	// auth authenticates the caller; its error is answered before the
	// call is accepted.
	auth func(*http.Request) (context.Context, error)
	// wg counts the calls in progress (HTTP: waited for at shutdown).
	wg sync.WaitGroup
}

// ServeHTTP answers one call. The 200 status line is sent before the verb
// runs: a client that has not received it knows the call never started
// here and can safely make it again elsewhere.
func (h *rpc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.wg.Add(1)
	defer h.wg.Done()
	verb := path.Base(r.URL.Path)
	o, ok := ops[verb]
	if !ok || r.Method != http.MethodPost {
		http.Error(w, "unknown verb "+verb, http.StatusNotFound)
		return
	}
	ctx, err := h.auth(r)
	if err != nil {
		refuse(w, statusOf(err), err)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush() // accepted: from here on the verb may run
	}
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(l line) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(l)
		if flusher != nil {
			flusher.Flush()
		}
	}
	out, err := run(h.s, ctx, o, body, func(p service.Progress) { send(line{Progress: &p}) })
	if err != nil {
		send(line{Error: err.Error(), Kind: service.KindOf(err)})
		return
	}
	raw, err := json.Marshal(out)
	if err != nil {
		send(line{Error: err.Error()})
		return
	}
	send(line{Result: raw})
}

// refuse answers a call that was not accepted, with the error's kind.
func refuse(w http.ResponseWriter, status int, err error) {
	if k := service.KindOf(err); k != "" {
		w.Header().Set(kindHeader, k)
	}
	http.Error(w, err.Error(), status)
}

// Remote calls the owner of the catalog over its socket.
type Remote struct {
	client *http.Client
	sock   string // for messages
	pid    int32  // the owner's, from SO_PEERCRED
}

// dialOwner connects to the owner answering in dir, or returns an error
// wrapping errNoOwner when none does.
func dialOwner(ctx context.Context, dir *socketDir) (*Remote, error) {
	c, cred, err := dir.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.Close()
	r := &Remote{sock: dir.sockPath(), pid: cred.Pid}
	tr := &http.Transport{
		// Each connection must reach the same owner: a Remote stands for
		// one owner, so a new one is noticed as a hand-over.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, cred, err := dir.dial(ctx)
			if err != nil {
				return nil, &dialError{err}
			}
			if cred.Pid != r.pid {
				c.Close()
				return nil, &dialError{fmt.Errorf("%w (pid %d now)", errOwnerChanged, cred.Pid)}
			}
			return c, nil
		},
		MaxIdleConnsPerHost: 8, // a mount's parallel lookups
	}
	r.client = &http.Client{Transport: tr}
	return r, nil
}

// errOwnerChanged: another process owns the catalog now.
var errOwnerChanged = errors.New("another volback process owns the catalog now")

// dialError marks a failure to connect, as opposed to a connection that
// broke.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// lostOwnerError says the connection to the owner failed during a call.
// accepted says whether the owner had accepted the call (sent its status
// line), that is whether the verb may have run there.
type lostOwnerError struct {
	verb     string
	pid      int32
	accepted bool
	err      error
}

func (e *lostOwnerError) Error() string {
	if e.accepted {
		return fmt.Sprintf("the volback process that owned the catalog (pid %d) went away during %s: %v", e.pid, e.verb, e.err)
	}
	return fmt.Sprintf("calling the volback process that owns the catalog (pid %d) for %s: %v", e.pid, e.verb, e.err)
}

func (e *lostOwnerError) Unwrap() error { return e.err }

// Call sends verb to the owner; cancelling ctx cancels the call there.
func (r *Remote) Call(ctx context.Context, verb string, req, resp any, p service.ProgressFunc) error {
	hdr := http.Header{}
	if proj := service.RequestedProject(ctx); proj != "" {
		hdr.Set(projectHeader, proj)
	}
	if pw := service.PasswordFrom(ctx); len(pw) > 0 {
		hdr.Set(passwordHeader, base64.StdEncoding.EncodeToString(pw))
	}
	err := callNative(ctx, r.client, "http://volback/v1/"+verb, hdr, req, resp, p)
	var le *linkError
	if !errors.As(err, &le) {
		return err
	}
	var de *dialError
	if !le.accepted && errors.As(le.err, &de) && !errors.Is(de.err, errNoOwner) && !errors.Is(de.err, errOwnerChanged) {
		return de.err // the socket or its owner is not to be trusted, or unreachable
	}
	return &lostOwnerError{verb: verb, pid: r.pid, accepted: le.accepted, err: le.err}
}

// Close releases idle connections.
func (r *Remote) Close() error {
	r.client.CloseIdleConnections()
	return nil
}

// linkError: the connection failed before the call was accepted, or
// broke after (accepted).
type linkError struct {
	accepted bool
	err      error
}

func (e *linkError) Error() string { return e.err.Error() }
func (e *linkError) Unwrap() error { return e.err }

// callNative makes one native call and decodes its answer: progress goes
// to p, the result into resp, an error comes back with its kind.
func callNative(ctx context.Context, c *http.Client, url string, hdr http.Header, req, resp any, p service.ProgressFunc) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range hdr {
		hreq.Header[k] = v
	}
	res, err := c.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &linkError{err: err}
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		text := strings.TrimSpace(string(msg))
		if k := res.Header.Get(kindHeader); k != "" {
			return service.KindError(k, text)
		}
		if res.StatusCode == http.StatusNotFound {
			return fmt.Errorf("the volback process answering does not know the verb %s: it is another version of volback; restart it", path.Base(url))
		}
		return errors.New(text)
	}
	dec := json.NewDecoder(res.Body)
	for {
		var l line
		if err := dec.Decode(&l); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &linkError{accepted: true, err: err}
		}
		switch {
		case l.Progress != nil:
			if p != nil {
				p(*l.Progress)
			}
		case l.Error != "":
			return service.KindError(l.Kind, l.Error)
		default:
			if resp == nil {
				return nil
			}
			return json.Unmarshal(l.Result, resp)
		}
	}
}
