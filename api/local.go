package api

import (
	"context"
	"encoding/json"
	"os"

	"github.com/volback/volback/service"
)

// Local calls the service in this process.
type Local struct{ S *service.Service }

// Call runs verb with req marshalled as the socket would, so local and
// remote calls behave the same: the same decoding, authentication (as
// this process's uid) and policy.
func (l Local) Call(ctx context.Context, verb string, req, resp any, p service.ProgressFunc) error {
	o, err := lookup(verb)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, err = l.S.Authenticate(ctx, os.Geteuid())
	if err != nil {
		return err
	}
	out, err := run(l.S, ctx, o, raw, p)
	if err != nil || resp == nil {
		return err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, resp)
}

// run checks the caller's identity in ctx against the operation's policy,
// decodes raw and runs it: the dispatch every native transport shares.
func run(s *service.Service, ctx context.Context, o *Op, raw []byte, p service.ProgressFunc) (any, error) {
	if err := o.authorize(ctx); err != nil {
		return nil, err
	}
	req, err := o.decode(raw)
	if err != nil {
		return nil, err
	}
	return observe(ctx, o, nil, func(ctx context.Context) (any, error) { return o.call(s, ctx, req, p) })
}

// Close closes the service.
func (l Local) Close() error { return l.S.Close() }

// LocalService is the service this caller runs verbs in.
func (l Local) LocalService() *service.Service { return l.S }
