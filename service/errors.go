package service

import (
	"errors"
	"fmt"

	"github.com/volback/volback/index"
)

// Error kinds a transport keeps across the wire (the socket, the native
// HTTP calls, the Cinder v3 API's status codes): callers test them with errors.Is, and the
// message stays the one that names the thing and the fix.
var (
	// ErrNotFound: no such volume, snapshot, backup or project, or one the
	// caller may not see (a foreign id is not found, not forbidden).
	ErrNotFound = index.ErrNotFound
	// ErrInvalidState: the thing exists but its status forbids the request
	// (Cinder's 400 "Invalid ..." and 409 conflicts).
	ErrInvalidState = errors.New("invalid state")
	// ErrQuotaExceeded: the request would take the project over a quota.
	ErrQuotaExceeded = errors.New("quota exceeded")
	// ErrForbidden: the caller's role does not allow the action.
	ErrForbidden = errors.New("forbidden")
	// ErrUsage: the request itself is malformed.
	ErrUsage = errors.New("bad request")
)

// kinds lists the kinds by the name they travel under.
var kinds = map[string]error{
	"not_found": ErrNotFound, "invalid_state": ErrInvalidState, "quota_exceeded": ErrQuotaExceeded,
	"forbidden": ErrForbidden, "usage": ErrUsage,
}

// KindOf names err's kind ("" when it has none of them).
func KindOf(err error) string {
	for name, k := range kinds {
		if errors.Is(err, k) {
			return name
		}
	}
	return ""
}

// KindError rebuilds an error received as text with its kind's name.
func KindError(kind, msg string) error {
	if k, ok := kinds[kind]; ok {
		return errorf(k, "%s", msg)
	}
	return errors.New(msg)
}

// Errorf is fmt.Errorf whose result also matches kind (ErrNotFound, ...)
// with errors.Is; the message is unchanged. Transports use it for their
// own refusals.
func Errorf(kind error, format string, a ...any) error { return errorf(kind, format, a...) }

// errorf is fmt.Errorf whose result also matches kind with errors.Is; the
// message is unchanged.
func errorf(kind error, format string, a ...any) error {
	return &kindError{err: fmt.Errorf(format, a...), kind: kind}
}

type kindError struct{ err, kind error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }
