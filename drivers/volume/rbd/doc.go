// Package rbd is the volume driver for Ceph RBD images, rbd://POOL/IMAGE,
// through librbd (go-ceph). It is built only with the ceph build tag
// (`make build`, or go build -tags ceph,pacific with librbd-dev installed);
// without it, rbd:// locators answer that this build has no Ceph support.
// Importing it registers it for the "rbd" scheme.
//
// Locator: rbd://POOL/IMAGE[@SNAPSHOT][?conf=PATH&user=ID&namespace=NS&timeout=DURATION]
//
//   - conf: the cluster's ceph.conf (default $CEPH_CONF, else /etc/ceph/ceph.conf)
//   - user: the client id to authenticate as (default "admin")
//   - namespace: the RBD namespace of the image inside the pool
//   - timeout: how long one cluster operation may take before it fails
//     (default 30s), so a stopped OSD fails a backup instead of hanging it
//   - @SNAPSHOT names one of the image's snapshots: opened read-only, it is
//     how a backup reads the image as of that moment
//
// What maps to what:
//
//   - Allocated extents are the image's allocation, from a diff against
//     nothing (whole objects, from the object map where the image has one).
//   - Snapshots are RBD snapshots: point in time even under a writer (a
//     snapshot taken through another handle is made by the exclusive lock's
//     owner, which quiesces its writes), immutable, and opened read-only.
//   - Changed extents since a snapshot come from rbd_diff_iterate2 between
//     that snapshot and the one the source is opened at. An overwrite inside
//     an object that existed at the older snapshot is reported exactly; an
//     object created since is reported from its start to its end, written
//     or not (librbd cannot say which part of a new object was written), so
//     writes into never-written areas of a sparse image read more than they
//     changed. Ranges whose objects were discarded are marked Zero.
//   - In use means watched: any client that has the image open for writing
//     (QEMU, rbd-nbd, a kernel mapping, `rbd watch`) watches its header.
//     This process's own watches do not count.
//   - Zero discards exactly the range (rbd_skip_partial_discard is off on
//     volback's connections), deallocating whole objects.
//
// Reads and writes are synchronous librbd calls: go-ceph has no RBD AIO
// API, so concurrency comes from callers using one handle from several
// goroutines (librbd is thread safe) — see Source.Readers.
package rbd

// Scheme is the locator scheme this driver serves.
const Scheme = "rbd"

// DriverName is the volume driver name Stat reports.
const DriverName = "rbd"
