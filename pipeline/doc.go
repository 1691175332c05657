// Package pipeline runs volback's data paths as stages on errgroup, each
// stage one job, memory bounded by fixed pools whatever the volume size:
//
//   - Backup: a planner walks the volume slot by slot (a manifest segment
//     each), readers fill blocks from the source, hashers hash, look chunks
//     up and hand new ones to the packer (which compresses, uploads and
//     commits each pack's entries), and a committer stores each segment in
//     slot order and counts its references once every pack it needs is
//     committed.
//   - Restore: a planner walks the segments, fetchers read blobs from
//     packs, decoders decompress and verify them, writers write the target.
//   - Image: the mount's read path, verified chunks through a shared cache
//     with read-ahead.
//
// Every path takes a context (cancellation stops every stage) and reports
// progress. The catalog is reached only through the small interfaces
// passed in (Catalog, Locator), so the stages are tested without it.
// CPU-heavy steps hold a token of a Budget shared by all pipelines of a
// process, so several backups at once share the cores.
package pipeline
