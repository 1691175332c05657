package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/service"
)

// Microversions served: 3.0 to 3.70, the most python-cinderclient 9.x
// asks for (it sends 3.70 on discovery). Fields that later microversions
// add to a response are included only when the request asks for them.
const (
	minMinor = 0
	maxMinor = 70
)

// versionHeader is the microversion header, asked for and echoed back.
const versionHeader = "OpenStack-API-Version"

// maxBody bounds a request body (a backup_url is at most 64 KiB of base64).
const maxBody = 1 << 20

// Request is one request of the Cinder v3 API, as routes see it.
type Request struct {
	HTTP *http.Request
	// Minor is the microversion asked for: 3.Minor.
	Minor int
	// ID is the authenticated caller.
	ID service.Identity
	// Project is the URL's project, or the caller's for a project-less URL.
	Project string

	ctx    context.Context // carries ID
	vars   map[string]string
	body   []byte
	action json.RawMessage // the value under a POST .../action body's key
	base   string          // scheme://host, for links
	less   bool            // the URL had no project
}

// Var is the path segment a route named {name}.
func (r *Request) Var(name string) string { return r.vars[name] }

// AtLeast reports whether the request asks for microversion 3.minor or later.
func (r *Request) AtLeast(minor int) bool { return r.Minor >= minor }

// Admin reports whether the caller is an admin.
func (r *Request) Admin() bool { return r.ID.Admin() }

// Query is a query parameter ("" when absent).
func (r *Request) Query(name string) string { return r.HTTP.URL.Query().Get(name) }

// Flag parses a boolean query parameter as oslo does (true, 1, yes, on).
func (r *Request) Flag(name string) (bool, error) {
	v := r.Query(name)
	if v == "" {
		return false, nil
	}
	return parseBool(name, v)
}

func parseBool(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "t", "true", "on", "y", "yes":
		return true, nil
	case "0", "f", "false", "off", "n", "no":
		return false, nil
	}
	return false, service.Errorf(service.ErrUsage, "Invalid value '%s' for %s: give true or false", v, name)
}

// Body decodes the body's member key (Cinder bodies are {"backup": {...}})
// into v.
func (r *Request) Body(key string, v any) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &top); err != nil {
		return service.Errorf(service.ErrUsage, "Malformed request body: %v; send a JSON object", err)
	}
	raw, ok := top[key]
	if !ok || string(raw) == "null" {
		return service.Errorf(service.ErrUsage, "Missing required element '%s' in request body.", key)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return service.Errorf(service.ErrUsage, "Invalid input for field/attribute %s: %v", key, err)
	}
	return nil
}

// Action decodes the value of a POST .../action body's key into v (null
// and {} decode to the zero value).
func (r *Request) Action(v any) error {
	if len(r.action) == 0 || string(r.action) == "null" {
		return nil
	}
	if err := json.Unmarshal(r.action, v); err != nil {
		return service.Errorf(service.ErrUsage, "Invalid input for the action: %v", err)
	}
	return nil
}

// link is Cinder's self or bookmark link to a resource.
func (r *Request) links(collection, id string) []map[string]string {
	return []map[string]string{
		{"rel": "self", "href": fmt.Sprintf("%s/v3/%s/%s/%s", r.base, r.Project, collection, id)},
		{"rel": "bookmark", "href": fmt.Sprintf("%s/%s/%s/%s", r.base, r.Project, collection, id)},
	}
}

// parseMinor reads the microversion asked for in h (the header's value,
// possibly listing several services): 3.0 when none is, the highest for
// "latest".
func parseMinor(h string) (int, error) {
	v := ""
	for _, part := range strings.Split(h, ",") {
		if svc, ver, ok := strings.Cut(strings.TrimSpace(part), " "); ok && strings.EqualFold(svc, "volume") {
			v = strings.TrimSpace(ver)
		}
	}
	switch {
	case v == "":
		return minMinor, nil
	case v == "latest":
		return maxMinor, nil
	}
	major, minor, ok := strings.Cut(v, ".")
	n, err := strconv.Atoi(minor)
	if !ok || err != nil || n < 0 || (major != "3" && major != "2") {
		return 0, service.Errorf(service.ErrUsage, "Invalid API version request %q: send %s: volume 3.N", v, versionHeader)
	}
	if major != "3" || n > maxMinor {
		return 0, errNotAcceptable{v}
	}
	return n, nil
}

// errNotAcceptable: a microversion outside 3.0-3.70 (406, as Cinder).
type errNotAcceptable struct{ v string }

func (e errNotAcceptable) Error() string {
	return fmt.Sprintf("Version %s is not supported by the API. Minimum is 3.%d and maximum is 3.%d.", e.v, minMinor, maxMinor)
}

// cinder serves the Cinder v3 API of one Server.
func (h *Server) cinder(w http.ResponseWriter, hr *http.Request) {
	r := &Request{HTTP: hr, base: baseURL(hr)}
	w.Header().Set("x-openstack-request-id", "req-"+uuid.NewString())
	minor, err := parseMinor(hr.Header.Get(versionHeader))
	if err != nil {
		var na errNotAcceptable
		if errors.As(err, &na) {
			writeJSON(w, http.StatusNotAcceptable, fault(http.StatusNotAcceptable, err.Error()))
			return
		}
		h.fail(w, err)
		return
	}
	r.Minor = minor
	w.Header().Set(versionHeader, fmt.Sprintf("volume 3.%d", minor))
	w.Header().Set("Vary", versionHeader)

	indexOnce.Do(indexRoutes)
	segs := strings.Split(strings.Trim(strings.TrimPrefix(hr.URL.Path, "/v3/"), "/"), "/")
	if !collections[segs[0]] {
		r.Project, segs = segs[0], segs[1:]
	} else {
		r.less = true
	}
	if len(segs) == 0 || segs[0] == "" {
		h.fail(w, service.Errorf(service.ErrNotFound, "The resource could not be found: %s names no collection (backups, volumes, snapshots, os-quota-sets, os-services)", hr.URL.Path))
		return
	}
	if r.ID, err = h.identify(hr); err != nil {
		h.fail(w, err)
		return
	}
	if r.less {
		r.Project = r.ID.Project
	} else if r.Project != r.ID.Project {
		h.fail(w, service.Errorf(service.ErrUsage, "Malformed request url: project %s in the URL is not project %s of the X-Auth-Token; use /v3/%s/... or the project-less /v3/...",
			r.Project, r.ID.Project, r.ID.Project))
		return
	}
	r.ctx = service.WithIdentity(hr.Context(), r.ID)
	if hr.Body != nil {
		if r.body, err = io.ReadAll(io.LimitReader(hr.Body, maxBody+1)); err != nil {
			return
		}
		if len(r.body) > maxBody {
			writeJSON(w, http.StatusRequestEntityTooLarge, fault(http.StatusRequestEntityTooLarge, fmt.Sprintf("Request is too large: more than %d bytes", maxBody)))
			return
		}
	}
	rt, err := h.route(r, segs)
	if err != nil {
		h.fail(w, err)
		return
	}
	req, err := rt.bind(r)
	if err != nil {
		h.fail(w, err)
		return
	}
	out, err := h.dispatch(r, rt, req)
	if err != nil {
		h.fail(w, err)
		return
	}
	if rt.render == nil {
		w.WriteHeader(rt.status)
		return
	}
	body := rt.render(r, out)
	if err, ok := body.(error); ok { // a render that filters may refuse (a bad marker)
		h.fail(w, err)
		return
	}
	writeJSON(w, rt.status, body)
}

// collections are the first path segments of project-less URLs.
var collections = map[string]bool{}

// routeIndex lists every route, literal segments first.
var routeIndex []*route

var indexOnce sync.Once

// indexRoutes fills routeIndex and collections from the operations
// (registered by init functions, so not in one of them).
func indexRoutes() {
	for _, v := range Verbs() {
		for i := range ops[v].Routes {
			rt := &ops[v].Routes[i]
			routeIndex = append(routeIndex, rt)
			collections[rt.path[0]] = true
		}
	}
	// Literal segments before {vars}: backups/detail before backups/{id}.
	sort.SliceStable(routeIndex, func(i, j int) bool { return literals(routeIndex[i]) > literals(routeIndex[j]) })
}

func literals(rt *route) int {
	n := 0
	for _, p := range rt.path {
		if !strings.HasPrefix(p, "{") {
			n++
		}
	}
	return n
}

// route finds the route of r: by path, then method, then action key or
// predicate. A known path with another method is 405, as Cinder answers.
func (h *Server) route(r *Request, segs []string) (*route, error) {
	pathKnown := false
	var action string
	for _, rt := range routeIndex {
		vars := map[string]string{}
		if !rt.match(segs, vars) {
			continue
		}
		pathKnown = true
		if rt.method != r.HTTP.Method {
			continue
		}
		if rt.action != "" {
			if action == "" {
				var err error
				if action, r.action, err = actionOf(r.body); err != nil {
					return nil, err
				}
			}
			if rt.action != action {
				continue
			}
		}
		r.vars = vars
		if rt.when != nil && !rt.when(r) {
			continue
		}
		return rt, nil
	}
	if action != "" {
		return nil, service.Errorf(service.ErrUsage, "There is no such action: %s (volback serves os-force_delete and os-reset_status on backups)", action)
	}
	if pathKnown {
		return nil, errBadMethod{r.HTTP.Method, r.HTTP.URL.Path}
	}
	return nil, service.Errorf(service.ErrNotFound, "The resource could not be found: volback does not serve %s %s (docs/API.md lists what it serves)", r.HTTP.Method, r.HTTP.URL.Path)
}

// errBadMethod: the path exists, not with this method (405).
type errBadMethod struct{ method, path string }

func (e errBadMethod) Error() string {
	return fmt.Sprintf("The method %s is not allowed for %s", e.method, e.path)
}

// actionOf is the single key of an action body and its value.
func actionOf(body []byte) (string, json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || len(top) != 1 {
		return "", nil, service.Errorf(service.ErrUsage, "Malformed request body: an action is a JSON object with one key, such as {\"os-reset_status\": {\"status\": \"error\"}}")
	}
	for k, v := range top {
		return k, v, nil
	}
	panic("unreachable")
}

// dispatch runs the route's operation as r's caller: at once, or, for a
// Background operation, until the service accepted the job.
func (h *Server) dispatch(r *Request, rt *route, req any) (any, error) {
	o := rt.op
	if err := o.authorize(r.ctx); err != nil {
		return nil, err
	}
	if !o.Background {
		return observe(r.ctx, o, nil, func(ctx context.Context) (any, error) { return o.call(h.s, ctx, req, nil) })
	}
	v, accepted, err := h.background(r.ctx, o, req)
	if err != nil || !accepted {
		return v, err
	}
	return rt.accepted(r, h.s, v)
}

// writeJSON answers status with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"computeFault": {"message": "encoding the response failed", "code": 500}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// fail answers err as Cinder's fault body with the status of its kind.
func (h *Server) fail(w http.ResponseWriter, err error) {
	status := statusOf(err)
	var bm errBadMethod
	if errors.As(err, &bm) {
		status = http.StatusMethodNotAllowed
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "Keystone uri=\"none\"")
	}
	if status >= 500 {
		h.log.Printf("api: %v", err)
	}
	writeJSON(w, status, fault(status, err.Error()))
}

// baseURL is scheme://host of the request, for links.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// cinderTime is Cinder's timestamp format (UTC, microseconds, no zone).
func cinderTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000")
}

// versions answers version discovery: / (300, every version) and /v3/.
func (h *Server) versions(w http.ResponseWriter, r *http.Request, status int) {
	v := map[string]any{
		"id": "v3.0", "status": "CURRENT", "version": fmt.Sprintf("3.%d", maxMinor), "min_version": fmt.Sprintf("3.%d", minMinor),
		"updated": "2022-08-31T00:00:00Z",
		"links": []map[string]string{
			{"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
			{"rel": "self", "href": baseURL(r) + "/v3/"},
		},
		"media-types": []map[string]string{{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}},
	}
	writeJSON(w, status, map[string]any{"versions": []any{v}})
}
