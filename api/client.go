package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/volback/volback/service"
)

// HTTPRemote calls a remote volback serve over HTTP with the native calls
// (the CLI's --os-endpoint): the same operations, progress and error
// kinds as through the socket, authenticated by an X-Auth-Token.
type HTTPRemote struct {
	base    string // scheme://host[:port][/prefix], without /v3...
	token   string
	project string // acted for (admins), sent as Volback-Project
	client  *http.Client
}

// DialHTTP returns a caller of the volback serve at endpoint (its Cinder
// endpoint, http://HOST:8776/v3[/PROJECT], or just http://HOST:8776).
// token is a token of the server's token file; without one, user and
// project make Cinder's noauth token USER:PROJECT. project, when set, is
// the project to act for.
func DialHTTP(endpoint, token, user, project string) (*HTTPRemote, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--os-endpoint %q: give the URL of a volback serve, such as http://127.0.0.1:8776/v3", endpoint)
	}
	path := u.Path
	if i := strings.Index(path+"/", "/v3/"); i >= 0 {
		path = path[:i]
	}
	if token == "" {
		if user == "" {
			return nil, fmt.Errorf("--os-endpoint %s: no credentials: set OS_AUTH_TOKEN to a token of the server's token file, or, for a server using noauth, OS_USER_ID (and OS_PROJECT_ID)", endpoint)
		}
		token = user + ":" + project
		if project == "" {
			token = user
		}
	}
	return &HTTPRemote{base: u.Scheme + "://" + u.Host + strings.TrimSuffix(path, "/"), token: token, project: project,
		client: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 8}}}, nil
}

// Call runs verb on the remote server; cancelling ctx cancels it there.
func (h *HTTPRemote) Call(ctx context.Context, verb string, req, resp any, p service.ProgressFunc) error {
	hdr := http.Header{}
	hdr.Set("X-Auth-Token", h.token)
	if proj := service.RequestedProject(ctx); proj != "" {
		hdr.Set(projectHeader, proj)
	} else if h.project != "" {
		hdr.Set(projectHeader, h.project)
	}
	err := callNative(ctx, h.client, h.base+"/volback/v1/"+verb, hdr, req, resp, p)
	var le *linkError
	if !errors.As(err, &le) {
		return err
	}
	if !le.accepted {
		return fmt.Errorf("calling volback serve at %s for %s: %v; check that it runs and listens there", h.base, verb, le.err)
	}
	hint := "check with 'volback list' and 'volback backup-list' before running it again"
	if o, ok := ops[verb]; ok && o.Unknown != "" {
		hint = o.Unknown
	}
	if idempotent(verb) {
		hint = "it changes nothing: run it again"
	}
	return fmt.Errorf("the connection to volback serve at %s broke during %s, after it accepted the call (%v), so whether %s took effect is unknown: %s",
		h.base, verb, le.err, verb, hint)
}

// Close releases idle connections.
func (h *HTTPRemote) Close() error {
	h.client.CloseIdleConnections()
	return nil
}
