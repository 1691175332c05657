package service

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

// Caller runs a verb, in this process (Local) or in the process that owns
// the catalog (Remote). req and resp are JSON-shaped values.
type Caller interface {
	Call(ctx context.Context, verb string, req, resp any, progress ProgressFunc) error
	Close() error
}

// Ref names one thing (volume or backup) or several.
type Ref struct {
	Ref  string   `json:"ref"`
	Refs []string `json:"refs,omitempty"`
	Zone string   `json:"zone,omitempty"`
	// AllProjects: an admin's listing shows every project's resources
	// (Cinder's --all-projects); ignored for members.
	AllProjects bool `json:"all_projects,omitempty"`
}

type handler func(s *Service, ctx context.Context, req json.RawMessage, p ProgressFunc) (any, error)

// decode wraps a typed method as a handler.
func decode[Req any, Resp any](f func(s *Service, ctx context.Context, r Req, p ProgressFunc) (Resp, error)) handler {
	return func(s *Service, ctx context.Context, raw json.RawMessage, p ProgressFunc) (any, error) {
		var r Req
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, fmt.Errorf("bad request: %v", err)
			}
		}
		return f(s, ctx, r, p)
	}
}

// handlers is every verb the API answers: the one list both the CLI (in
// process) and the socket server dispatch through.
var handlers = map[string]handler{
	"manage": decode(func(s *Service, ctx context.Context, r ManageRequest, _ ProgressFunc) (*VolumeView, error) {
		return s.Manage(ctx, r)
	}),
	"create": decode(func(s *Service, ctx context.Context, r CreateRequest, p ProgressFunc) (*VolumeView, error) {
		return s.CreateVolume(ctx, r, p)
	}),
	"list": decode(func(s *Service, ctx context.Context, r Ref, p ProgressFunc) ([]VolumeView, error) {
		vols, err := s.ListVolumes(ctx, r.AllProjects)
		if err == nil && len(vols) == 0 {
			s.emptyCatalogNotice(ctx, p)
		}
		return vols, err
	}),
	"show": decode(func(s *Service, ctx context.Context, r Ref, _ ProgressFunc) (*VolumeView, error) {
		return s.ShowVolume(ctx, r.Ref)
	}),
	"delete": decode(func(s *Service, ctx context.Context, r Ref, _ ProgressFunc) (*VolumeView, error) {
		return s.DeleteVolume(ctx, r.Ref)
	}),
	"backup-create": decode(func(s *Service, ctx context.Context, r BackupRequest, p ProgressFunc) (*BackupView, error) {
		return s.CreateBackup(ctx, r, p)
	}),
	"backup-list": decode(func(s *Service, ctx context.Context, r Ref, p ProgressFunc) ([]BackupView, error) {
		bs, err := s.ListBackups(ctx, r.Ref, r.AllProjects)
		if err == nil && len(bs) == 0 {
			s.emptyCatalogNotice(ctx, p)
		}
		return bs, err
	}),
	"backup-show": decode(func(s *Service, ctx context.Context, r Ref, _ ProgressFunc) (*BackupView, error) {
		return s.ShowBackup(ctx, r.Ref)
	}),
	"backup-delete": decode(func(s *Service, ctx context.Context, r DeleteRequest, _ ProgressFunc) ([]BackupView, error) {
		return s.DeleteBackups(ctx, r)
	}),
	"backup-reset-state": decode(func(s *Service, ctx context.Context, r ResetStateRequest, _ ProgressFunc) (*BackupView, error) {
		return s.ResetBackupState(ctx, r)
	}),
	"backup-restore": decode(func(s *Service, ctx context.Context, r RestoreRequest, p ProgressFunc) (*RestoreView, error) {
		return s.Restore(ctx, r, p)
	}),
	"repo-gc": decode(func(s *Service, ctx context.Context, r GCRequest, _ ProgressFunc) ([]GCReport, error) {
		return s.GC(ctx, r)
	}),
	"repo-check": decode(func(s *Service, ctx context.Context, r CheckRequest, _ ProgressFunc) ([]CheckReport, error) {
		return s.Check(ctx, r)
	}),
	"quota-show": decode(func(s *Service, ctx context.Context, r QuotaRequest, _ ProgressFunc) (*QuotaView, error) {
		return s.ShowQuota(ctx, r)
	}),
	"quota-usage": decode(func(s *Service, ctx context.Context, r QuotaRequest, _ ProgressFunc) ([]QuotaUsage, error) {
		return s.QuotaUsage(ctx, r)
	}),
	"quota-update": decode(func(s *Service, ctx context.Context, r QuotaRequest, _ ProgressFunc) (*QuotaView, error) {
		return s.UpdateQuota(ctx, r)
	}),
	"snapshot-create": decode(func(s *Service, ctx context.Context, r SnapshotRequest, _ ProgressFunc) (*SnapshotView, error) {
		return s.CreateSnapshot(ctx, r)
	}),
	"snapshot-list": decode(func(s *Service, ctx context.Context, r Ref, _ ProgressFunc) ([]SnapshotView, error) {
		return s.ListSnapshots(ctx, r.Ref, r.AllProjects)
	}),
	"snapshot-show": decode(func(s *Service, ctx context.Context, r Ref, _ ProgressFunc) (*SnapshotView, error) {
		return s.ShowSnapshot(ctx, r.Ref)
	}),
	"snapshot-delete": decode(func(s *Service, ctx context.Context, r Ref, _ ProgressFunc) (*SnapshotView, error) {
		return s.DeleteSnapshot(ctx, r.Ref)
	}),
	"service-list": decode(func(s *Service, ctx context.Context, _ Ref, _ ProgressFunc) ([]ServiceView, error) {
		return s.ListServices(ctx)
	}),
	"service-disable": decode(func(s *Service, ctx context.Context, r ServiceRequest, _ ProgressFunc) (*ServiceView, error) {
		return s.SetServiceEnabled(ctx, r, false)
	}),
	"service-enable": decode(func(s *Service, ctx context.Context, r ServiceRequest, _ ProgressFunc) (*ServiceView, error) {
		return s.SetServiceEnabled(ctx, r, true)
	}),
	"backup-locate": decode(func(s *Service, ctx context.Context, r Ref, _ ProgressFunc) (*ImageLocation, error) {
		return s.LocateImage(ctx, r.Ref)
	}),
}

// Verbs lists the API's verbs.
func Verbs() []string {
	var v []string
	for k := range handlers {
		v = append(v, k)
	}
	sort.Strings(v)
	return v
}

// Local calls the service in this process.
type Local struct{ S *Service }

// Call dispatches verb with req marshalled as the socket would, so local and
// remote calls behave the same.
func (l Local) Call(ctx context.Context, verb string, req, resp any, p ProgressFunc) error {
	h, ok := handlers[verb]
	if !ok {
		return fmt.Errorf("unknown verb %q", verb)
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, err = l.S.authenticate(ctx, os.Geteuid())
	if err != nil {
		return err
	}
	if err := authorize(ctx, verb); err != nil {
		return err
	}
	out, err := h(l.S, ctx, raw, p)
	if err != nil {
		return err
	}
	if resp == nil {
		return nil
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, resp)
}

// Close closes the service.
func (l Local) Close() error { return l.S.Close() }

func (l Local) service() *Service { return l.S }
