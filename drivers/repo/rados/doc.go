// Package rados is the rados:// repository driver: objects in a Ceph pool
// through librados (go-ceph). It is built only with the ceph build tag
// (`make build`, or go build -tags ceph,pacific with librados-dev
// installed); without it, rados:// URLs answer that this build has no Ceph
// support.
//
// URL: rados://POOL[?conf=PATH&user=ID&namespace=NS&timeout=DURATION]
//
//   - conf: the cluster's ceph.conf (default $CEPH_CONF, else /etc/ceph/ceph.conf)
//   - user: the client id to authenticate as (default "admin"; the keyring
//     is found through the conf)
//   - namespace: a RADOS namespace, so several repositories share one pool
//   - timeout: how long one cluster operation may take before it fails
//     (default 30s; rados_osd_op_timeout, rados_mon_op_timeout and
//     client_mount_timeout), so a stopped OSD fails a backup instead of
//     hanging it
//
// Opening with create makes the pool when it is missing.
//
// # Layout
//
// An object is stored under its own name (oid = name) in the namespace,
// with a small metadata record (size, mtime, layout) in the omap key
// "volback.meta" of that object, written in the same atomic write op as
// its data. Objects up to the part size (1 MiB, or osd_max_object_size
// when that is smaller) are stored inline: one write_full + omap op, so a
// reader sees the whole old or the whole new object. Larger objects (packs,
// large manifests) are split into parts "volback.part.<nonce>.<i>" written
// concurrently, and the head object, written last in one op, names the
// parts' nonce: the head write is the commit point, so a replace is still
// all-or-nothing and objects of any size work (Properties states no
// MaxObjectSize). Each Put uses a fresh nonce, so concurrent Puts of one
// name never write into each other's parts.
//
// RADOS cannot list by prefix, so List reads an index: omap keys in
// "volback.index" (top-level names and "dir/" markers) and in
// "volback.index.<dir>" (every name under a top-level directory). The
// index is written before the object: Put records a pending entry, writes
// the object, then commits the entry with size and mtime; Delete marks the
// entry pending, removes the object, then the entry. A crash therefore
// leaves at worst a pending entry, never an object missing from the
// index. List reports committed entries as they are and checks pending
// ones against the object itself, skipping those whose object is absent.
// Pending entries also record the nonces of the parts a crashed Put or
// Delete may have left behind; CleanUp (repo.Cleaner, for GC under the
// exclusive repository lock) deletes those and settles the entries.
//
// Names whose first element starts with "volback." are reserved for these
// internal objects. Concurrent Put and Delete of one name are not
// supported (chunkstore deletes only under the exclusive repository lock).
package rados

// DriverName is the backup_service name reported by Name.
const DriverName = "volback.drivers.rados"
