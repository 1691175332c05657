package service

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// Roles a caller can have. An admin sees and acts on every project; a
// member only on its own.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// User is one entry of volback.toml's [users] table: the project a local
// user acts in and its role there.
type User struct {
	Project string `toml:"project"`
	Role    string `toml:"role"`
}

// Identity is who calls a service method: the transport authenticates the
// caller (the socket by SO_PEERCRED, in-process calls by the process's
// uid, the HTTP API by its token) and attaches it with WithIdentity, so
// every method sees an explicit project and role.
type Identity struct {
	UID int `json:"uid"`
	// User names an HTTP API caller (its token's user); "" for local
	// callers, who are known by UID.
	User    string `json:"user,omitempty"`
	Project string `json:"project"`
	Role    string `json:"role"`
}

// Admin reports whether the identity may act on every project.
func (i Identity) Admin() bool { return i.Role == RoleAdmin }

// String names the caller in messages: "user alice" or "uid 1000".
func (i Identity) String() string {
	if i.User != "" {
		return "user " + i.User
	}
	return "uid " + strconv.Itoa(i.UID)
}

// sees reports whether a resource of project p exists for the caller.
func (i Identity) sees(p string) bool { return i.Admin() || p == i.Project }

// lists reports whether a listing shows a resource of project p: an admin
// sees other projects' resources only when asking for all of them, as
// Cinder's --all-projects.
func (i Identity) lists(p string, all bool) bool { return p == i.Project || (all && i.Admin()) }

type identityKey struct{}
type projectKey struct{}

// WithIdentity attaches the authenticated caller to ctx.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// WithProject asks to act for project p (--os-project-id): granted to
// admins only, when the call is authenticated.
func WithProject(ctx context.Context, p string) context.Context {
	return context.WithValue(ctx, projectKey{}, p)
}

// RequestedProject is the project WithProject asked for, or "".
func RequestedProject(ctx context.Context) string {
	p, _ := ctx.Value(projectKey{}).(string)
	return p
}

// caller is the identity attached to ctx. Without one the call comes from
// this process's own code (tests, recovery): the owner's user, an admin.
func caller(ctx context.Context) Identity {
	if id, ok := ctx.Value(identityKey{}).(Identity); ok {
		return id
	}
	return Identity{UID: os.Geteuid(), Project: DefaultProject, Role: RoleAdmin}
}

// Authenticate maps a local uid to its identity and attaches it to ctx,
// honouring the project the caller asked to act for. Root and the user
// that owns the catalog are admins of project admin unless [users] says
// otherwise; any other uid needs an entry in [users].
func (s *Service) Authenticate(ctx context.Context, uid int) (context.Context, error) {
	id, err := s.cfg.identify(uid)
	if err != nil {
		return nil, err
	}
	if p := RequestedProject(ctx); p != "" && p != id.Project {
		if !id.Admin() {
			return nil, errorf(ErrForbidden, "%s is a member of project %s and cannot act for project %s; only an admin can (--os-project-id)",
				id, id.Project, p)
		}
		if err := checkProject(p); err != nil {
			return nil, err
		}
		id.Project = p
	}
	return WithIdentity(ctx, id), nil
}

// identify is uid's identity by the [users] table (by uid, then by user
// name), else admin of project admin for root and this process's user.
func (c Config) identify(uid int) (Identity, error) {
	if u, ok := c.userEntry(uid); ok {
		return Identity{UID: uid, Project: u.Project, Role: u.Role}, nil
	}
	if uid == 0 || uid == os.Geteuid() {
		return Identity{UID: uid, Project: DefaultProject, Role: RoleAdmin}, nil
	}
	return Identity{}, errorf(ErrForbidden, "uid %d (%s) has no entry in the [users] table of %s: an admin adds one, e.g. %s = { project = \"demo\", role = \"member\" }",
		uid, userName(uid), filepath.Join(c.Home, ConfigName), strconv.Quote(userName(uid)))
}

// userEntry finds uid in [users] by number or by name.
func (c Config) userEntry(uid int) (User, bool) {
	if u, ok := c.Users[strconv.Itoa(uid)]; ok {
		return u, true
	}
	if n := userName(uid); n != "" {
		u, ok := c.Users[n]
		return u, ok
	}
	return User{}, false
}

// HasUser reports whether uid may call the catalog's owner at all.
func (c Config) HasUser(uid int) bool {
	_, err := c.identify(uid)
	return err == nil
}

func userName(uid int) string {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return ""
	}
	return u.Username
}

// checkUsers validates the [users] table.
func (c Config) checkUsers(path string) error {
	for name, u := range c.Users {
		if err := checkProject(u.Project); err != nil {
			return fmt.Errorf("config %s: users.%s: %v", path, name, err)
		}
		if u.Role != RoleAdmin && u.Role != RoleMember {
			return fmt.Errorf("config %s: users.%s: role %q: use %q or %q", path, name, u.Role, RoleMember, RoleAdmin)
		}
	}
	return nil
}

// CheckProject refuses project ids that cannot be catalog key parts.
func CheckProject(p string) error { return checkProject(p) }

func checkProject(p string) error {
	if p == "" || len(p) > 255 {
		return errorf(ErrUsage, "project id %q: give 1 to 255 characters", p)
	}
	for _, r := range p {
		if r == '/' || r < ' ' {
			return errorf(ErrUsage, "project id %q: '/' and control characters are not allowed", p)
		}
	}
	return nil
}

// requireAdmin refuses a member, in Cinder's policy wording.
func requireAdmin(id Identity, action string) error {
	if id.Admin() {
		return nil
	}
	return errorf(ErrForbidden, "Policy doesn't allow %s to be performed. (%s is a member of project %s; this needs an admin)", action, id, id.Project)
}

// RequireAdmin refuses a caller that is not an admin, naming the policy
// action (Cinder's wording): the transports' check of admin-only verbs.
func RequireAdmin(ctx context.Context, action string) error {
	return requireAdmin(caller(ctx), action)
}

// CallerOf is the identity a call runs as (see WithIdentity).
func CallerOf(ctx context.Context) Identity { return caller(ctx) }

// requirePathAdmin refuses a member naming where volback writes a new
// image file: the owner writes it with its own rights.
func requirePathAdmin(ctx context.Context, path string) error {
	if path == "" {
		return nil
	}
	return requireAdmin(caller(ctx), "volume:create_with_path")
}
