// Package integration holds end-to-end tests that build the volback binary
// and drive it as a user would: real image files, ext4 file systems, loop
// devices and tmpfs repositories. Tests that need root, loop devices or
// mkfs skip with a message saying what is missing.
//
// Run with `go test ./integration/`. VOLBACK_TAGS adds build tags to the
// binary TestMain builds; VOLBACK_BIN tests an already built binary instead.
package integration
