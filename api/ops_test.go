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
		"repo-gc": true, "repo-check": true, "repo-repair": true, "service-disable": true, "service-enable": true,
		"repo-init": true, "repo-key": true}
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

// TestEmptyCatalogNotice: list and backup-list of an empty catalog pass
// on the service's notice (a lost catalog looks like an empty one): it
// reaches the caller as a progress notice.
func TestEmptyCatalogNotice(t *testing.T) {
	e := newEnv(t, "")
	vol, _ := e.volume("v", "admin", 1<<20, 1)
	if _, err := e.s.CreateBackup(adminCtx, service.BackupRequest{Volume: vol}, nil); err != nil {
		t.Fatal(err)
	}
	// A second home on the same repository has an empty catalog.
	other := newEnvAt(t, t.TempDir(), "[zones.nova]\nrepository = \"file://"+e.home+"/repository\"\n")
	for _, verb := range []string{"backup-list", "list"} {
		var notices []string
		var out []map[string]any
		err := Local{other.s}.Call(context.Background(), verb, service.Ref{}, &out, func(p service.Progress) {
			if p.Notice != "" {
				notices = append(notices, p.Notice)
			}
		})
		if err != nil || len(out) != 0 {
			t.Fatalf("%s: %v %v", verb, out, err)
		}
		if len(notices) != 1 || !strings.Contains(notices[0], "catalog-rebuild") {
			t.Errorf("%s of an empty catalog beside a repository with records: notices %q", verb, notices)
		}
	}
}
