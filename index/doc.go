// Package index is the catalog: volumes, backups and chunk reference counts
// in a Badger database under the volback home. The catalog is an index: the
// repositories hold everything needed to rebuild it (docs/FORMAT.md).
//
// Key layout (schema version 2; docs/CATALOG.md is the long form):
//
//	schema                         -> decimal ASCII version, "2"
//	vol/<volume id>                -> Volume as JSON
//	bak/<backup id>                -> Backup as JSON
//	chk/<repo id>/<32 raw id bytes> -> Chunk, 50 bytes binary (see encodeChunk)
//	repo/<repo id>                  -> RepoState as JSON (GC generation)
//	zone/<zone>                     -> ZoneBinding as JSON (the zone's repository)
//	bpk/<backup id>/<32 raw pack id> -> empty: a pack the backup uploads
//	reg/<repo id>                   -> Repository as JSON (registered: name, zone, cipher)
//	scrub/<repo id>                 -> ScrubState as JSON (where sampled scrubs stopped)
//	lost/<repo id>                  -> uint64 big-endian: lost entries put (LossEpoch)
//
// Ids never contain '/', so a prefix scan of "chk/<repo id>/" sees exactly
// one repository's chunks. Lifecycle records (lifecycle.go): "snap/<id>",
// "quota/<project>", "qguard/<project>", "svc/<binary>/<zone>". A new
// prefix that old code ignores does not need
// a schema bump, a changed value encoding does.
//
// One process owns the catalog at a time (Badger's rule); Open returns an
// error wrapping ErrLocked when another process holds it.
package index
