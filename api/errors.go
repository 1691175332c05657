package api

import (
	"errors"
	"net/http"

	"github.com/volback/volback/service"
)

// statusOf is the HTTP status of an error by its kind, as Cinder answers:
// an invalid state and a malformed request are 400 (Cinder's "Invalid
// backup: ..."), a quota 413, a policy refusal 403, anything unknown 404.
// An error of no kind is volback's own failure: 500.
func statusOf(err error) int {
	switch {
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, service.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, service.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, service.ErrQuotaExceeded):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, service.ErrInvalidState), errors.Is(err, service.ErrUsage):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// errUnauthorized: no credentials, or ones that name nobody (401).
var errUnauthorized = errors.New("unauthorized")

// unauthorized is a 401 refusal with its message as given.
func unauthorized(format string, a ...any) error {
	return service.Errorf(errUnauthorized, format, a...)
}

// faultNames are the keys of Cinder's error bodies by status.
var faultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
	406: "notAcceptable", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
	501: "notImplemented", 503: "serviceUnavailable",
}

// fault is Cinder's error body: {"itemNotFound": {"message": ..., "code": 404}}.
func fault(status int, msg string) map[string]any {
	name, ok := faultNames[status]
	if !ok {
		name = "computeFault"
	}
	return map[string]any{name: map[string]any{"message": msg, "code": status}}
}
