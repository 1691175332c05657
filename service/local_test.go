package service

import (
	"context"
	"encoding/json"
	"fmt"
)

// Local is a Caller for this package's tests, running in process the
// verbs a MountSource calls, with JSON round trips as a transport makes
// (package api's Local is the real one, over every verb).
type Local struct{ S *Service }

func (l Local) Call(ctx context.Context, verb string, req, resp any, _ ProgressFunc) error {
	var r Ref
	b, _ := json.Marshal(req)
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	var out any
	var err error
	switch verb {
	case "backup-list":
		out, err = l.S.ListBackups(ctx, r.Ref, r.AllProjects)
	case "backup-locate":
		var lr LocateRequest
		json.Unmarshal(b, &lr)
		out, err = l.S.LocateImage(ctx, lr)
	default:
		return fmt.Errorf("service tests' Local: verb %s not served", verb)
	}
	if err != nil {
		return err
	}
	b, _ = json.Marshal(out)
	return json.Unmarshal(b, resp)
}

func (l Local) Close() error           { return nil }
func (l Local) LocalService() *Service { return l.S }
