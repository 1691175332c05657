//go:build ceph

package rbd

import (
	"testing"

	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/drivers/volume/volumetest"
	"github.com/volback/volback/integration/ceph"
)

// harness runs the suite on images of 1<<order-byte objects.
func harness(e ceph.Env, order int, sparse bool) volumetest.Harness {
	return volumetest.Harness{
		Driver:         DriverName,
		New:            func(t *testing.T, size int64) string { return newImage(t, e, size, order) },
		Free:           func(t *testing.T) string { return freeLocator(t, e) },
		Sparse:         sparse,
		SnapshotMethod: volume.MethodRBD,
		GatheredWrites: true, // the target gathers writes into whole objects
		Holders: []volumetest.Holder{
			{Name: "OtherClient", Hold: func(t *testing.T, loc string) (string, func()) { return holdOpen(t, e, loc) }},
			{Name: "RBDWatch", Hold: func(t *testing.T, loc string) (string, func()) {
				return "watched by client.", rbdWatch(t, e, loc)
			}},
		},
	}
}

// TestImages runs the suite on images of 64 KiB objects: allocation is
// known per object, so small objects let Allocated leave the suite's
// holes out (Sparse).
func TestImages(t *testing.T) {
	e := ceph.Cluster(t)
	volumetest.Run(t, Driver{}, harness(e, 16, true))
}

// TestImagesDefaultObjects runs it on images of the default 4 MiB objects,
// where every piece the suite writes makes its object allocated.
func TestImagesDefaultObjects(t *testing.T) {
	e := ceph.Cluster(t)
	volumetest.Run(t, Driver{}, harness(e, 22, false))
}
