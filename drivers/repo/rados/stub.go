//go:build !ceph

package rados

import (
	"context"
	"fmt"
	"net/url"

	"github.com/volback/volback/drivers/repo"
)

// Without the ceph tag the scheme is still known, so a rados:// URL gets
// told how to build with Ceph instead of "no driver for scheme".
func init() {
	repo.Register("rados", func(ctx context.Context, u *url.URL, create bool) (repo.Backend, error) {
		return nil, fmt.Errorf("repository URL %q: this volback was built without Ceph support; build it with `make build` (go build -tags ceph,pacific, after scripts/deps.sh installs librados-dev)", u.String())
	})
}
