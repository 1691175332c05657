//go:build ceph

package rados

import (
	"context"
	"time"

	"github.com/volback/volback/drivers/repo"
)

// CleanUp settles pending index entries older than olderThan: the parts of
// the nonces an entry names that the head does not use are deleted, and
// the entry is committed from the head (or removed when there is no
// object). Run it only when no Put can be in flight (GC holds the
// exclusive repository lock): a writer paused between its parts and its
// head would otherwise commit a head whose parts are gone.
func (b *Backend) CleanUp(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	settled := 0
	settle := func(name string, val []byte) error {
		e, err := decodeEntry(val)
		if err == nil && (!e.pending || e.modTime.After(cutoff)) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		b.layouts.drop(name)
		head, ok, err := b.readMeta(name)
		if err != nil {
			return b.opErr("clean up", name, err)
		}
		for _, p := range []meta{{nonce: e.nonce, parts: e.parts}, {nonce: e.oldNonce, parts: e.oldParts}} {
			if p.parts > 0 && (!ok || p.nonce != head.nonce) {
				b.deleteParts(p)
			}
		}
		if ok {
			err = b.setEntry(name, entry{size: head.size, modTime: head.modTime})
		} else {
			err = b.rmEntry(name)
		}
		if err != nil {
			return b.opErr("clean up (index entry of)", name, err)
		}
		settled++
		return nil
	}
	err := b.eachKey(ctx, rootIndex, "", func(key string, val []byte) error {
		if dir, isDir := cutDir(key); isDir {
			return b.eachKey(ctx, dirIndex(dir), dir+"/", settle)
		}
		return settle(key, val)
	})
	return settled, err
}

var _ repo.Cleaner = (*Backend)(nil)
