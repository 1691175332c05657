package api

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/volback/volback/service"
)

// authenticator maps an X-Auth-Token to the identity it stands for.
type authenticator interface {
	identify(token string) (service.Identity, error)
	// hint says how to get a token, for a request without one.
	hint() string
}

// noauth is Cinder's noauth strategy: the token is USER:PROJECT (or
// USER, meaning project USER), taken at its word. User admin of project
// admin is an admin; everyone else is a member of the project named. It
// is for a loopback address or a trusted network only.
type noauth struct{}

func (noauth) identify(token string) (service.Identity, error) {
	user, project, _ := strings.Cut(token, ":")
	if project == "" {
		project = user
	}
	if user == "" {
		return service.Identity{}, unauthorized("X-Auth-Token %q names no user: send USER:PROJECT (this volback serve uses noauth)", token)
	}
	if err := service.CheckProject(project); err != nil {
		return service.Identity{}, unauthorized("X-Auth-Token %q: %v", token, err)
	}
	id := service.Identity{UID: -1, User: user, Project: project, Role: service.RoleMember}
	if user == service.RoleAdmin && project == service.DefaultProject {
		id.Role = service.RoleAdmin
	}
	return id, nil
}

func (noauth) hint() string {
	return "send X-Auth-Token: USER:PROJECT (this volback serve uses noauth; cinder: OS_AUTH_TYPE=noauth OS_USER_ID=... OS_PROJECT_ID=...)"
}

// tokenFile maps static tokens to identities, one per line of the file:
//
//	TOKEN PROJECT ROLE [USER]
//
// with # comments. The file is read again when it changes, so tokens are
// added and revoked without a restart. It must not be readable by others.
type tokenFile struct {
	path string

	mu     sync.Mutex
	mtime  time.Time
	size   int64
	tokens map[string]service.Identity
}

// newTokenFile reads path, refusing a file others may read or a bad line.
func newTokenFile(path string) (*tokenFile, error) {
	t := &tokenFile{path: path}
	if err := t.load(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *tokenFile) load() error {
	fi, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("token file %s: %v; create it (lines of TOKEN PROJECT ROLE [USER], mode 0600) or fix api.token_file in volback.toml", t.path, err)
	}
	if fi.ModTime().Equal(t.mtime) && fi.Size() == t.size && t.tokens != nil {
		return nil
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("token file %s has mode %#o: other users can read the tokens; run chmod 600 %s", t.path, fi.Mode().Perm(), t.path)
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("token file %s: %v", t.path, err)
	}
	tokens := map[string]service.Identity{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 || len(f) > 4 {
			return fmt.Errorf("token file %s, line %d: want TOKEN PROJECT ROLE [USER], got %d fields", t.path, n, len(f))
		}
		if err := service.CheckProject(f[1]); err != nil {
			return fmt.Errorf("token file %s, line %d: %v", t.path, n, err)
		}
		if f[2] != service.RoleAdmin && f[2] != service.RoleMember {
			return fmt.Errorf("token file %s, line %d: role %q: use %s or %s", t.path, n, f[2], service.RoleMember, service.RoleAdmin)
		}
		if _, dup := tokens[f[0]]; dup {
			return fmt.Errorf("token file %s, line %d: the token is listed twice; give each caller its own", t.path, n)
		}
		user := "token-" + f[1] // a token without a user is named by its project
		if len(f) == 4 {
			user = f[3]
		}
		tokens[f[0]] = service.Identity{UID: -1, User: user, Project: f[1], Role: f[2]}
	}
	t.tokens, t.mtime, t.size = tokens, fi.ModTime(), fi.Size()
	return nil
}

func (t *tokenFile) identify(token string) (service.Identity, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(); err != nil {
		// Fail closed: a broken file authenticates nobody.
		return service.Identity{}, fmt.Errorf("volback serve cannot check tokens: %v", err)
	}
	id, ok := t.tokens[token]
	if ok {
		return id, nil
	}
	// cinder has no token option that works; its noauth sends
	// OS_USER_ID:OS_PROJECT_ID, so TOKEN:PROJECT is accepted too.
	if tok, project, cut := cutLast(token, ":"); cut {
		if id, ok := t.tokens[tok]; ok {
			if project != id.Project {
				return service.Identity{}, unauthorized("the X-Auth-Token's token is of project %s, not %s", id.Project, project)
			}
			return id, nil
		}
	}
	return service.Identity{}, unauthorized("the X-Auth-Token is not one of %s: ask volback's admin for a token", t.path)
}

// cutLast is strings.Cut at the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

func (t *tokenFile) hint() string {
	return "send X-Auth-Token: TOKEN, a token from volback's token file (openstack: --os-auth-type admin_token --os-token TOKEN; cinder: OS_AUTH_TYPE=noauth OS_USER_ID=TOKEN OS_PROJECT_ID=its project)"
}
