//go:build !ceph

package rbd

import (
	"strings"
	"testing"

	"github.com/volback/volback/drivers/volume"
)

func TestBuiltWithoutCeph(t *testing.T) {
	_, err := volume.Stat("rbd://pool/image")
	if err == nil || !strings.Contains(err.Error(), "built without Ceph support") || !strings.Contains(err.Error(), "-tags ceph,pacific") {
		t.Fatalf("rbd:// in a build without the ceph tag: %v, want an error saying how to build with Ceph", err)
	}
}
