package api

import (
	"fmt"
	"strings"

	"github.com/volback/volback/service"
)

// Route maps requests of the Cinder v3 API onto an operation: Bind makes
// the operation's request from the HTTP request, Render makes Cinder's
// response body from the operation's result.
type Route[Req, Resp any] struct {
	Method string
	// Path is under /v3/{project_id}/ (and the project-less /v3/), with
	// {name} matching one path segment: "backups/{id}/restore".
	Path string
	// Action, for POST .../action, is the body's key that selects this
	// route ("os-force_delete").
	Action string
	// When, if set, picks among routes of one method and path
	// (os-quota-sets/{project}?usage=True).
	When   func(*Request) bool
	Status int // on success
	Bind   func(*Request) (Req, error)
	// Render is the response body; nil answers without one.
	Render func(*Request, Resp) any
	// Accepted makes the response of a Background operation from the
	// view the service accepted the job with, when that is not a Resp
	// (a volume created from a backup is accepted as a restore).
	Accepted func(*Request, *service.Service, any) (Resp, error)
}

// route is a Route with its types erased, as the router holds it.
type route struct {
	op       *Op
	method   string
	path     []string
	action   string
	when     func(*Request) bool
	status   int
	bind     func(*Request) (any, error)
	render   func(*Request, any) any
	accepted func(*Request, *service.Service, any) (any, error)
}

func (r Route[Req, Resp]) erase(o *Op) route {
	e := route{op: o, method: r.Method, path: strings.Split(r.Path, "/"), action: r.Action, when: r.When, status: r.Status,
		bind: func(q *Request) (any, error) { return r.Bind(q) }}
	if r.Render != nil {
		e.render = func(q *Request, v any) any { return r.Render(q, v.(Resp)) }
	}
	e.accepted = func(q *Request, s *service.Service, v any) (any, error) {
		if r.Accepted != nil {
			return r.Accepted(q, s, v)
		}
		if resp, ok := v.(Resp); ok {
			return resp, nil
		}
		return nil, fmt.Errorf("%s accepted its job as a %T, not a %T: volback's route table is wrong", o.Verb, v, *new(Resp))
	}
	return e
}

// match reports whether the route's path matches segs, recording its
// {name} segments in vars.
func (r *route) match(segs []string, vars map[string]string) bool {
	if len(segs) != len(r.path) {
		return false
	}
	for i, p := range r.path {
		if strings.HasPrefix(p, "{") {
			if segs[i] == "" {
				return false
			}
			vars[p[1:len(p)-1]] = segs[i]
		} else if p != segs[i] {
			return false
		}
	}
	return true
}
