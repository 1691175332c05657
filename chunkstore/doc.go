// Package chunkstore implements the repository format (docs/FORMAT.md) over a
// repo.Backend: content-addressed chunks compressed into self-describing
// packs, manifests and backup records, and verified, cached reads.
package chunkstore
