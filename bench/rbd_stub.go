//go:build !ceph

package main

import "errors"

// rewriteRBD needs librbd: the bench must be built with the ceph tag.
func rewriteRBD(cephEnv, string, float64, uint64) ([]int64, error) {
	return nil, errors.New("W7 writes the image through librbd: run the bench built with -tags ceph,pacific (make bench-ceph)")
}
