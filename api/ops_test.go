package api

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/volback/volback/service"
)

// member is a member of project p, as an authenticated caller.
func member(p string) context.Context {
	return service.WithIdentity(context.Background(), service.Identity{UID: 1000, Project: p, Role: service.RoleMember})
}

// TestAdminOnlyVerbs: every admin-only operation is refused to a member
// before it runs, through the dispatch all native transports share, in
// Cinder's policy wording; the set is the one volback documents.
func TestAdminOnlyVerbs(t *testing.T) {
	want := map[string]bool{"manage": true, "backup-import": true, "backup-reset-state": true, "catalog-rebuild": true,
		"repo-gc": true, "repo-check": true, "service-disable": true, "service-enable": true}
	for _, verb := range Verbs() {
		o := ops[verb]
		if (o.Admin != "") != want[verb] {
			t.Errorf("%s: admin-only %v, want %v", verb, o.Admin != "", want[verb])
		}
		if o.Admin == "" {
			continue
		}
		// A nil service: the refusal must come before anything runs.
		_, err := run(nil, member("demo"), o, []byte(`{}`), nil)
		if !errors.Is(err, service.ErrForbidden) || !strings.Contains(err.Error(), "Policy doesn't allow "+o.Admin) ||
			!strings.Contains(err.Error(), "uid 1000 is a member of project demo") {
			t.Errorf("%s by a member: %v", verb, err)
		}
	}
}

// TestMalformedRequest: a request that does not decode into the
// operation's type is a usage error naming the verb.
func TestMalformedRequest(t *testing.T) {
	_, err := run(nil, context.Background(), ops["backup-create"], []byte(`{"volume": 7}`), nil)
	if !errors.Is(err, service.ErrUsage) || !strings.Contains(err.Error(), "backup-create") {
		t.Errorf("malformed backup-create: %v", err)
	}
}
