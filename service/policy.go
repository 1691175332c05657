package service

import "context"

// adminOnly maps the verbs only an admin may call to the policy name
// Cinder's refusal uses. Verbs that are admin-only only with some
// arguments (backup-delete --force, quota-update of another project)
// check in their method.
var adminOnly = map[string]string{
	// manage reads any path as root: members get volumes with create
	"manage":             "volume_extension:volume_manage",
	"backup-import":      "backup:backup-import",
	"backup-reset-state": "backup:backup-reset_status",
	"catalog-rebuild":    "backup:catalog-rebuild",
	"repo-gc":            "backup:repo-gc",
	"repo-check":         "backup:repo-check",
	"repo-repair":        "backup:repo-repair",
	"service-disable":    "volume_extension:services:update",
	"service-enable":     "volume_extension:services:update",
}

// authorize refuses a verb the caller's role does not allow. Every
// transport dispatches through it (Local.Call, the socket).
func authorize(ctx context.Context, verb string) error {
	if action, ok := adminOnly[verb]; ok {
		return requireAdmin(caller(ctx), action)
	}
	return nil
}

// requirePathAdmin refuses a member naming where volback writes a new
// image file: the owner writes it with its own rights.
func requirePathAdmin(ctx context.Context, path string) error {
	if path == "" {
		return nil
	}
	return requireAdmin(caller(ctx), "volume:create_with_path")
}
