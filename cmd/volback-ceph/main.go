// Command volback-ceph is the Ceph plugin: the rados:// repository driver
// and the rbd:// volume driver, built as a Go plugin (`make build`:
// go build -buildmode=plugin -tags ceph,pacific) and loaded by volback
// the first time a rados:// or rbd:// locator is used (drivers/plugins).
// Kept out of the volback binary, librados and librbd cost nothing to a
// run that never touches Ceph (~10 MiB of RSS and 40 ms of start-up each),
// and volback runs on a host that does not have them.
package main

import (
	_ "github.com/volback/volback/drivers/repo/rados" // registers rados://
	_ "github.com/volback/volback/drivers/volume/rbd" // registers rbd://
)

// main exists so that `go build ./...` builds this package; as a plugin
// only its imports' init functions run.
func main() {}
