package main

import (
	"plugin"

	"github.com/volback/volback/drivers/plugins"
)

// rados:// and rbd:// are served by the Ceph plugin beside the binary
// (cmd/volback-ceph), opened the first time one is used.
func init() {
	plugins.Open = func(path string) error {
		_, err := plugin.Open(path)
		return err
	}
}
