//go:build !ceph

package rbd

import (
	"context"
	"errors"
	"fmt"

	"github.com/volback/volback/drivers/volume"
)

// Without the ceph tag the scheme is still known, so an rbd:// locator gets
// told how to build with Ceph instead of "no driver for scheme".
func init() { volume.Register(Scheme, Driver{}) }

// Driver answers every rbd:// locator that this build has no Ceph support.
type Driver struct{}

var (
	_ volume.Driver  = Driver{}
	_ volume.Placer  = Driver{}
	_ volume.Checker = Driver{}
)

const noCeph = "this volback was built without Ceph support; build it with `make build` (go build -tags ceph,pacific, after scripts/deps.sh installs librbd-dev)"

func unsupported(locator string) error { return fmt.Errorf("volume %q: %s", locator, noCeph) }

// Available says this build cannot serve rbd:// (service-list shows the
// driver down with this reason).
func (Driver) Available() error { return errors.New(noCeph) }

func (Driver) Stat(l string) (volume.Info, error)                    { return volume.Info{}, unsupported(l) }
func (Driver) OpenSource(l string) (volume.Source, error)            { return nil, unsupported(l) }
func (Driver) OpenTarget(l string) (volume.Target, error)            { return nil, unsupported(l) }
func (Driver) CreateTarget(l string, _ int64) (volume.Target, error) { return nil, unsupported(l) }
func (Driver) Delete(l string) error                                 { return unsupported(l) }
func (Driver) InUse(l string) (volume.Usage, error)                  { return volume.Usage{}, unsupported(l) }
func (Driver) DeleteSnapshot(l, _ string) error                      { return unsupported(l) }
func (Driver) Snapshot(_ context.Context, l, _ string) (volume.Snapshot, error) {
	return volume.Snapshot{}, unsupported(l)
}

// Place names the image as a Ceph build would; creating it then says
// that this build has no Ceph support.
func (Driver) Place(location, id string) (string, error) { return place(location, id) }
