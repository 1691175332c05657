package service

import (
	"context"
	"errors"

	"github.com/volback/volback/chunkstore"
)

// Passphrases reach the owner of the catalog without argv or logs: the
// CLI reads --password-file or VOLBACK_PASSWORD and attaches it to the
// call's context (WithPassword), which the private socket carries in a
// header; `serve` may also hold one from its own start (Config.Password).
// The owner unlocks a repository the first time a call needs it and then
// keeps the master key in memory until it exits; the catalog never holds a
// key.

type passwordKey struct{}

// WithPassword attaches a repository passphrase to a call.
func WithPassword(ctx context.Context, password []byte) context.Context {
	if len(password) == 0 {
		return ctx
	}
	return context.WithValue(ctx, passwordKey{}, password)
}

// PasswordFrom is the passphrase attached to ctx, if any.
func PasswordFrom(ctx context.Context) []byte {
	p, _ := ctx.Value(passwordKey{}).([]byte)
	return p
}

// password is the call's passphrase, else the owner's own.
func (s *Service) password(ctx context.Context) []byte {
	if p := PasswordFrom(ctx); len(p) > 0 {
		return p
	}
	return s.cfg.Password
}

// unlock makes r's data readable: a no-op unless r is encrypted and
// locked. It tries the call's passphrase, then the owner's own; a wrong
// one is an error wrapping chunkstore.ErrWrongPassword, none at all one
// wrapping chunkstore.ErrNeedKey. Nothing is written either way.
func (s *Service) unlock(ctx context.Context, r *repository) error {
	if r.store.Unlocked() {
		return nil
	}
	tried := false
	var err error
	for _, pw := range [][]byte{PasswordFrom(ctx), s.cfg.Password} {
		if len(pw) == 0 {
			continue
		}
		tried = true
		if err = r.store.Unlock(ctx, pw); err == nil {
			s.event(ctx, "repository unlocked", "repository", r.id, "key", r.store.KeyID())
			return nil
		}
		if !errors.Is(err, chunkstore.ErrWrongPassword) {
			return err
		}
	}
	if !tried {
		return r.store.Ready()
	}
	return err
}

// locked reports whether err says a passphrase is missing or wrong:
// such a refusal records nothing (no error backup).
func locked(err error) bool {
	return errors.Is(err, chunkstore.ErrNeedKey) || errors.Is(err, chunkstore.ErrWrongPassword)
}

// RepoKeyRequest is repo-key add|list|remove|passwd.
type RepoKeyRequest struct {
	Action     string `json:"action"`               // add, list, remove, passwd
	Repository string `json:"repository,omitempty"` // name, URL or id; "" = the default zone's
	KeyID      string `json:"key_id,omitempty"`     // remove
	// NewPassword is the passphrase of the key to add (add, passwd); it
	// travels in the request body over the private socket and is never
	// logged.
	NewPassword []byte `json:"new_password,omitempty"`
}

// RepoKey manages the key objects of an encrypted repository. Adding a
// key or changing a passphrase writes one small key object (and passwd
// removes the old one); no data is rewritten.
func (s *Service) RepoKey(ctx context.Context, req RepoKeyRequest) ([]chunkstore.KeyInfo, error) {
	var r *repository
	var err error
	if req.Repository == "" {
		r, err = s.repoFor(ctx, s.cfg.DefaultZone)
	} else {
		r, _, err = s.repoNamed(ctx, req.Repository)
	}
	if err != nil {
		return nil, err
	}
	if !r.store.Encrypted() {
		return nil, errorf(ErrInvalidState, "repository %s (%s) is not encrypted: it has no keys (encryption is chosen at repo-init)", r.id, r.url)
	}
	switch req.Action {
	case "list":
		return r.store.Keys(ctx)
	case "add", "passwd":
		if len(req.NewPassword) == 0 {
			return nil, errorf(ErrUsage, "repo-key %s needs the new passphrase: give it with --new-password-file FILE or VOLBACK_NEW_PASSWORD", req.Action)
		}
		var ki chunkstore.KeyInfo
		if req.Action == "add" {
			ki, err = r.store.AddKey(ctx, req.NewPassword, s.cfg.kdf)
		} else {
			ki, err = r.store.ChangePassword(ctx, req.NewPassword, s.cfg.kdf)
		}
		if err != nil {
			return nil, err
		}
		s.event(ctx, "repository key "+map[string]string{"add": "added", "passwd": "changed"}[req.Action], "repository", r.id, "key", ki.ID)
		return []chunkstore.KeyInfo{ki}, nil
	case "remove":
		if req.KeyID == "" {
			return nil, errorf(ErrUsage, "repo-key remove needs the KEY id (repo-key list shows them)")
		}
		if err := r.store.RemoveKey(ctx, req.KeyID, false); err != nil {
			return nil, err
		}
		s.event(ctx, "repository key removed", "repository", r.id, "key", req.KeyID)
		return r.store.Keys(ctx)
	}
	return nil, errorf(ErrUsage, "repo-key %q: use add, list, remove or passwd", req.Action)
}
