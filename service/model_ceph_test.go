//go:build ceph

package service

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/volback/volback/integration/ceph"
)

// TestModelOnRados runs the model-based test on the Ceph test cluster: two
// homes on one pool namespace, locking through RADOS's cls lock.
func TestModelOnRados(t *testing.T) {
	e := ceph.Cluster(t)
	saved := modelRepository
	defer func() { modelRepository = saved }()
	modelRepository = func(seed uint64, dir string) (string, func()) {
		q := url.Values{"conf": {e.Conf}, "user": {e.User}, "namespace": {fmt.Sprintf("model-%d-%d", seed, time.Now().UnixNano())}}
		return "rados://" + e.Pool + "?" + q.Encode(), func() {}
	}
	modelSeeds(t, 20*time.Second)
}
