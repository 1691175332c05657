//go:build ceph

package rbd

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/ceph/go-ceph/rbd"

	"github.com/volback/volback/drivers/volume"
)

func init() { volume.Register(Scheme, Driver{}) }

// Driver serves RBD images by rbd:// locator.
type Driver struct{}

var (
	_ volume.Driver = Driver{}
	_ volume.Placer = Driver{}
)

// Place puts new volume id in the pool rbd://POOL[?…] as the image
// volume-<id>, Cinder's name for it.
func (Driver) Place(location, id string) (string, error) {
	return place(location, id)
}

// Stat opens the image (or snapshot) read-only to learn its size.
func (Driver) Stat(locator string) (volume.Info, error) {
	l, err := ParseLocator(locator)
	if err != nil {
		return volume.Info{}, err
	}
	size, err := statImage(l)
	if err != nil {
		return volume.Info{}, err
	}
	return volume.Info{Locator: l.String(), Driver: DriverName, Size: size}, nil
}

// OpenSource opens the image, or its snapshot, read-only.
func (Driver) OpenSource(locator string) (volume.Source, error) {
	l, err := ParseLocator(locator)
	if err != nil {
		return nil, err
	}
	return openSource(l)
}

// OpenTarget opens an existing image for writing, refusing one that another
// client has open (a watcher). librbd's exclusive lock then moves to this
// handle when it writes; it is not taken in exclusive mode, which would
// also refuse snapshots requested through other handles.
func (Driver) OpenTarget(locator string) (volume.Target, error) {
	l, err := ParseLocator(locator)
	if err != nil {
		return nil, err
	}
	if l.Snapshot != "" {
		return nil, fmt.Errorf("volume %s is a snapshot, which is read-only: restore into the image (%s) or a new volume", l, l.At(""))
	}
	im, err := openImage(l, true)
	if err != nil {
		return nil, err
	}
	u, err := im.usage()
	if err == nil && u.InUse {
		err = refusal(l, u)
	}
	if err != nil {
		im.close()
		return nil, err
	}
	return newTarget(im, false)
}

// CreateTarget creates a new image of size bytes with the cluster's default
// features and object size, and opens it for writing. It refuses an
// existing image.
func (Driver) CreateTarget(locator string, size int64) (volume.Target, error) {
	l, err := ParseLocator(locator)
	if err != nil {
		return nil, err
	}
	if l.Snapshot != "" {
		return nil, fmt.Errorf("create volume %s: a snapshot cannot be created as a volume; drop @%s", l, l.Snapshot)
	}
	if err := volume.CheckSize(l.String(), size, "give a size in whole sectors"); err != nil {
		return nil, fmt.Errorf("create %w", err)
	}
	_, io, err := ioctx(l)
	if err != nil {
		return nil, err
	}
	opts := rbd.NewRbdImageOptions()
	defer opts.Destroy()
	err = rbd.CreateImage(io, l.Image, uint64(size), opts)
	io.Destroy()
	if errno(err) == -17 { // EEXIST
		return nil, fmt.Errorf("create volume %s: the image already exists; choose a new image name or restore into the existing volume instead", l)
	}
	if err != nil {
		return nil, opErr(l, "create", err)
	}
	im, err := openImage(l, true)
	if err != nil {
		removeImage(l)
		return nil, err
	}
	return newTarget(im, true)
}

// Delete removes an image volback created, with the change-tracking
// snapshots volback left on it ("volback.*"). Other snapshots are not
// volback's to remove: the image is then refused, naming them.
func (Driver) Delete(locator string) error {
	l, err := ParseLocator(locator)
	if err != nil {
		return err
	}
	if l.Snapshot != "" {
		return fmt.Errorf("delete volume %s: that is a snapshot; delete the snapshot, or the image %s", l, l.At(""))
	}
	im, err := openImage(l, true)
	if err != nil {
		return err
	}
	u, err := im.usage()
	if err == nil && u.InUse {
		err = refusal(l, u)
	}
	if err == nil {
		err = im.purgeOwnSnapshots()
	}
	if cerr := im.close(); err == nil && cerr != nil {
		err = opErr(l, "close", cerr)
	}
	if err != nil {
		return err
	}
	return removeImage(l)
}

func removeImage(l Locator) error {
	_, io, err := ioctx(l)
	if err != nil {
		return err
	}
	defer io.Destroy()
	err = rbd.RemoveImage(io, l.Image)
	switch errno(err) {
	case 0:
		return nil
	case -16: // EBUSY: a watcher appeared
		return volume.Errorf(volume.ErrInUse, "delete volume %s: another client has the image open (`rbd status %s` names it); stop it, then try again", l, l.Spec())
	case -39: // ENOTEMPTY: snapshots
		return fmt.Errorf("delete volume %s: the image has snapshots volback did not make; remove them first (`rbd snap ls %s`)", l, l.Spec())
	}
	return opErr(l, "delete", err)
}

// purgeOwnSnapshots removes the image's volback.* snapshots and refuses an
// image with any other.
func (im *image) purgeOwnSnapshots() error {
	snaps, err := im.GetSnapshotNames()
	if err != nil {
		return opErr(im.loc, "list snapshots of", err)
	}
	var foreign []string
	for _, s := range snaps {
		if !strings.HasPrefix(s.Name, OwnSnapshotPrefix) {
			foreign = append(foreign, s.Name)
		}
	}
	if len(foreign) > 0 {
		sort.Strings(foreign)
		return fmt.Errorf("delete volume %s: the image has snapshots volback does not own (%s); delete them first (volback snapshot-delete, or `rbd snap rm %s@NAME`)",
			im.loc, strings.Join(foreign, ", "), im.loc.Spec())
	}
	for _, s := range snaps {
		if err := im.GetSnapshot(s.Name).Remove(); err != nil && errno(err) != -2 {
			return opErr(im.loc, "remove snapshot "+s.Name+" of", err)
		}
	}
	return nil
}

// OwnSnapshotPrefix starts the names of the snapshots volback keeps on an
// image for change tracking (volback.<backup-id>).
const OwnSnapshotPrefix = "volback."

// InUse reports another client watching the image.
func (Driver) InUse(locator string) (volume.Usage, error) {
	l, err := ParseLocator(locator)
	if err != nil {
		return volume.Usage{}, err
	}
	im, err := openImage(l.At(""), false)
	if err != nil {
		return volume.Usage{}, err
	}
	defer im.close()
	return im.usage()
}

// usage lists the image's watchers other than this process's connection.
func (im *image) usage() (volume.Usage, error) {
	ws, err := im.ListWatchers()
	if err != nil {
		return volume.Usage{}, opErr(im.loc, "list the watchers of", err)
	}
	var who []string
	for _, w := range ws {
		if w.Id != im.c.id {
			who = append(who, fmt.Sprintf("client.%d at %s", w.Id, w.Addr))
		}
	}
	if len(who) == 0 {
		return volume.Usage{}, nil
	}
	sort.Strings(who)
	return volume.Usage{InUse: true,
		Reason: "watched by " + strings.Join(who, ", ") + " (another client has the image open)",
		Fix:    fmt.Sprintf("stop that client or have it close the image (a virtual machine: shut it down or detach the disk; a mapping: rbd unmap; `rbd status %s` lists them)", im.loc.At("").Spec())}, nil
}

func refusal(l Locator, u volume.Usage) error {
	return volume.Errorf(volume.ErrInUse, "volume %s is in use: it is %s; %s, then try again", l, u.Reason, u.Fix)
}

// Snapshot takes an RBD snapshot named name: point in time, even while
// another client writes (librbd has the exclusive lock's owner take it).
func (Driver) Snapshot(ctx context.Context, locator, name string) (volume.Snapshot, error) {
	l, err := ParseLocator(locator)
	if err != nil {
		return volume.Snapshot{}, err
	}
	if l.Snapshot != "" {
		return volume.Snapshot{}, fmt.Errorf("snapshot of %s: that is already a snapshot; snapshot the image %s", l, l.At(""))
	}
	if err := checkSnapshotName(l.String(), name); err != nil {
		return volume.Snapshot{}, err
	}
	if err := ctx.Err(); err != nil {
		return volume.Snapshot{}, err
	}
	im, err := openImage(l, true)
	if err != nil {
		return volume.Snapshot{}, err
	}
	defer im.close()
	size, err := im.size()
	if err != nil {
		return volume.Snapshot{}, err
	}
	if _, err := im.CreateSnapshot(name); errno(err) == -17 {
		return volume.Snapshot{}, fmt.Errorf("snapshot %q of volume %s already exists: choose another name or delete that snapshot first", name, l)
	} else if err != nil {
		return volume.Snapshot{}, opErr(l, "snapshot "+name+" of", err)
	}
	// The size at the snapshot: the image may have been resized between
	// the size read above and the snapshot.
	if n, err := statImage(l.At(name)); err == nil {
		size = n
	}
	return volume.Snapshot{Name: name, Locator: l.At(name).String(), Method: volume.MethodRBD, Size: size}, nil
}

// DeleteSnapshot removes the image's snapshot name.
func (Driver) DeleteSnapshot(locator, name string) error {
	l, err := ParseLocator(locator)
	if err != nil {
		return err
	}
	if err := checkSnapshotName(l.String(), name); err != nil {
		return err
	}
	im, err := openImage(l.At(""), true)
	if err != nil {
		return err
	}
	defer im.close()
	err = im.GetSnapshot(name).Remove()
	switch errno(err) {
	case 0:
		return nil
	case -2:
		return volume.Errorf(volume.ErrNotFound, "snapshot %q of volume %s does not exist", name, l.At(""))
	case -16: // EBUSY: protected, with clones
		return fmt.Errorf("delete snapshot %q of volume %s: it is protected (clones depend on it); flatten or remove the clones and unprotect it first (`rbd children %s`)", name, l.At(""), l.At(name).Spec())
	}
	return opErr(l, "delete snapshot "+name+" of", err)
}

var snapshotName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// checkSnapshotName refuses names volback does not make: 1 to 128 letters,
// digits, '.', '_' or '-', starting with a letter or digit (as the file
// driver), so a name is also safe in a locator.
func checkSnapshotName(loc, name string) error {
	if !snapshotName.MatchString(name) {
		return fmt.Errorf("snapshot name %q for volume %q: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit", name, loc)
	}
	return nil
}
