package service

import "context"

// Caller runs a verb, in this process or in the process that owns the
// catalog; package api implements it over the operation table, the unix
// socket and HTTP. req and resp are JSON-shaped values.
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

// LocalServicer is a Caller that runs verbs in this process when it owns
// the catalog: LocalService is then its Service, else nil. A mount uses
// it to read through the catalog directly.
type LocalServicer interface {
	LocalService() *Service
}

// localService is the Service behind c when this process owns the
// catalog, else nil.
func localService(c Caller) *Service {
	if l, ok := c.(LocalServicer); ok {
		return l.LocalService()
	}
	return nil
}
