package integration

import (
	"path/filepath"
	"testing"
)

// TestBlockDevice backs up a loop block device, restores it into a new
// image volume, and restores it over a second managed block device.
func TestBlockDevice(t *testing.T) {
	requireLoop(t)
	home := newHome(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	randomFile(t, src, 64*mib, 50)
	dev := losetup(t, src)

	v := manage(t, home, "dev", dev)
	if v.SizeBytes != 64*mib {
		t.Errorf("manage %s: size_bytes %d, want %d", dev, v.SizeBytes, 64*mib)
	}
	b := backupCreate(t, home, "dev")

	r := restoreNew(t, home, b.ID, "from-dev")
	if got := fileSize(t, r.Path); got != 64*mib {
		t.Errorf("restored image is %d bytes, want %d", got, 64*mib)
	}
	compareFiles(t, dev, r.Path, 64*mib)

	// Restore over an existing volume: a second device holding other data.
	dst := filepath.Join(dir, "dst.img")
	randomFile(t, dst, 64*mib, 51)
	dev2 := losetup(t, dst)
	target := manage(t, home, "target", dev2)
	var res Restore
	runJSON(t, home, &res, "backup-restore", "--volume", "target", b.ID)
	if res.VolumeID != target.ID {
		t.Errorf("backup-restore --volume target printed volume_id %q, want %q", res.VolumeID, target.ID)
	}
	compareFiles(t, src, dev2, 64*mib)
	if st := showVolume(t, home, target.ID).Status; st != "available" {
		t.Errorf("target volume status after restore is %q, want available", st)
	}
}
