package service

// The binary loads rados:// and rbd:// from the Ceph plugin
// (drivers/plugins); the tests link them in: the real drivers with the
// ceph tag, without it the stubs that say how to build them.
import (
	_ "github.com/volback/volback/drivers/repo/rados"
	_ "github.com/volback/volback/drivers/volume/rbd"
)
