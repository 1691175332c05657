//go:build !ceph

package rados

import (
	"context"
	"strings"
	"testing"

	"github.com/volback/volback/drivers/repo"
)

func TestBuiltWithoutCeph(t *testing.T) {
	_, err := repo.Open(context.Background(), "rados://pool", true)
	if err == nil || !strings.Contains(err.Error(), "built without Ceph support") || !strings.Contains(err.Error(), "-tags ceph,pacific") {
		t.Fatalf("rados:// in a build without the ceph tag: %v, want an error saying how to build with Ceph", err)
	}
}
