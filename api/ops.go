// Package api is volback's transport: the operations of package service
// described once (ops.go), served to other volback processes on the
// catalog owner's unix socket and to anyone over HTTP (the Cinder v3 API
// and the same native calls), with error kinds kept across both wires.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/volback/volback/service"
)

// Op is one operation of the service as every transport sees it: the CLI
// in process, the socket, the native HTTP calls and the Cinder routes all
// dispatch through the same Op, so policy and idempotency are stated once.
type Op struct {
	Verb string
	// Admin, when set, is the policy action (in Cinder's naming) that only
	// admins may perform. Operations that need an admin only with some
	// arguments (backup-delete --force, another project's quotas) check in
	// the service.
	Admin string
	// Idempotent: the operation changes nothing (or the same when
	// repeated), so a client may run it again on a new owner after the old
	// one died while running it.
	Idempotent bool
	// Unknown tells a caller whose owner died after accepting the call how
	// to find out whether it took effect.
	Unknown string
	// Background: the Cinder API answers 202 once the service has
	// committed the job's first state (a backup creating, a restore
	// restoring), and the job goes on in the worker pool.
	Background bool
	// Routes are the Cinder v3 routes that reach the operation.
	Routes []route

	// call runs the operation with a request of its own type.
	call func(s *service.Service, ctx context.Context, req any, p service.ProgressFunc) (any, error)
	// decodeReq decodes a JSON request into the operation's type.
	decodeReq func(raw []byte) (any, error)
}

// def describes an operation whose method takes Req and returns Resp; the
// routes are typed alike, so a route cannot feed an operation the wrong
// request.
func def[Req, Resp any](o Op, f func(s *service.Service, ctx context.Context, r Req, p service.ProgressFunc) (Resp, error), routes ...Route[Req, Resp]) *Op {
	o.call = func(s *service.Service, ctx context.Context, req any, p service.ProgressFunc) (any, error) {
		return f(s, ctx, req.(Req), p)
	}
	o.decodeReq = func(raw []byte) (any, error) {
		var r Req
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, err
			}
		}
		return r, nil
	}
	for _, r := range routes {
		o.Routes = append(o.Routes, r.erase(&o))
	}
	return &o
}

// decode turns a JSON request into the operation's request type.
func (o *Op) decode(raw []byte) (any, error) {
	r, err := o.decodeReq(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: malformed request: %v: %w", o.Verb, err, service.ErrUsage)
	}
	return r, nil
}

// authorize refuses a caller the operation's policy does not allow.
func (o *Op) authorize(ctx context.Context) error {
	if o.Admin != "" {
		return service.RequireAdmin(ctx, o.Admin)
	}
	return nil
}

// ops is every operation, by verb.
var ops = map[string]*Op{}

func register(list ...*Op) {
	for _, o := range list {
		if _, dup := ops[o.Verb]; dup {
			panic("api: operation " + o.Verb + " described twice")
		}
		ops[o.Verb] = o
	}
}

// Verbs lists the operations' verbs.
func Verbs() []string {
	var v []string
	for k := range ops {
		v = append(v, k)
	}
	sort.Strings(v)
	return v
}

// lookup finds an operation, naming the verbs when there is none.
func lookup(verb string) (*Op, error) {
	if o, ok := ops[verb]; ok {
		return o, nil
	}
	return nil, fmt.Errorf("unknown verb %q: %w", verb, service.ErrUsage)
}

// idempotent reports whether verb may run again on a new owner.
func idempotent(verb string) bool {
	o, ok := ops[verb]
	return ok && o.Idempotent
}
