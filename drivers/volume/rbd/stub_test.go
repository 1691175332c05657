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

// TestStubUnavailable: the registry reports the stub unavailable, with
// how to build with Ceph (service-list shows it down with this reason).
func TestStubUnavailable(t *testing.T) {
	err := volume.Available(Scheme)
	if err == nil || !strings.Contains(err.Error(), "built without Ceph support") || !strings.Contains(err.Error(), "-tags ceph,pacific") {
		t.Fatalf("volume.Available(%q) in a build without the ceph tag: %v, want why and how to rebuild", Scheme, err)
	}
}
