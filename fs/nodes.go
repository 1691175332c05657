package fs

import (
	"context"
	"errors"
	"io"
	iofs "io/fs"
	"log"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// filesystem is what every node shares.
type filesystem struct {
	cat     *catalog
	src     Source
	log     *log.Logger
	uid     uint32
	gid     uint32
	mounted time.Time
	// directIO: open images with FOPEN_DIRECT_IO (set once the mount is
	// live, see Options.DirectIO).
	directIO atomic.Bool

	// open tracks handles only so they can be closed if the server stops
	// with RELEASEs undelivered; Open and Release take mu, reads never do.
	mu     sync.Mutex
	open   map[*imageHandle]struct{}
	closed bool
}

func (f *filesystem) track(h *imageHandle) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	if f.open == nil {
		f.open = make(map[*imageHandle]struct{})
	}
	f.open[h] = struct{}{}
	return true
}

// untrack reports whether h was still tracked, i.e. whether the caller
// must close it.
func (f *filesystem) untrack(h *imageHandle) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.open[h]
	delete(f.open, h)
	return ok
}

// closeOpen closes every image still open once serving stopped.
func (f *filesystem) closeOpen() {
	f.mu.Lock()
	hs := f.open
	f.open, f.closed = nil, true
	f.mu.Unlock()
	for h := range hs {
		h.close()
	}
}

func (f *filesystem) dirAttr(a *fuse.Attr, ino uint64, mtime time.Time) {
	a.Ino = ino
	a.Mode = fuse.S_IFDIR | 0o555
	a.Nlink = 2
	a.Owner = fuse.Owner{Uid: f.uid, Gid: f.gid}
	a.SetTimes(nil, &mtime, &mtime)
}

func (f *filesystem) fileAttr(a *fuse.Attr, e *Entry) {
	a.Ino = backupIno(e.ID)
	a.Mode = fuse.S_IFREG | 0o444
	a.Nlink = 2 // by-id and by-volume
	a.Size = uint64(e.Size)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 1 << 20
	a.Owner = fuse.Owner{Uid: f.uid, Gid: f.gid}
	t := e.CreatedAt
	a.SetTimes(&t, &t, &t)
}

// listing fetches the cached listing, turning a catalog failure into EIO
// (and a log line, since the kernel only passes on the errno).
func (f *filesystem) listing(ctx context.Context) (*listing, syscall.Errno) {
	l, err := f.cat.get(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, syscall.EINTR
		}
		f.log.Printf("volback fs: listing backups: %v", err)
		return nil, syscall.EIO
	}
	return l, 0
}

// roDir refuses every change to a directory with EROFS. The mount is also
// read-only for the kernel, so these are a second line: go-fuse would
// otherwise treat a missing Unlink or Rmdir as success.
type roDir struct {
	gofs.Inode
}

var (
	_ gofs.NodeMkdirer   = (*roDir)(nil)
	_ gofs.NodeMknoder   = (*roDir)(nil)
	_ gofs.NodeCreater   = (*roDir)(nil)
	_ gofs.NodeSymlinker = (*roDir)(nil)
	_ gofs.NodeLinker    = (*roDir)(nil)
	_ gofs.NodeUnlinker  = (*roDir)(nil)
	_ gofs.NodeRmdirer   = (*roDir)(nil)
	_ gofs.NodeRenamer   = (*roDir)(nil)
	_ gofs.NodeSetattrer = (*roDir)(nil)
)

func (*roDir) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*roDir) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*roDir) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (*roDir) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*roDir) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (*roDir) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }
func (*roDir) Rmdir(context.Context, string) syscall.Errno  { return syscall.EROFS }
func (*roDir) Rename(context.Context, string, gofs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}
func (*roDir) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// rootNode holds the two fixed trees.
type rootNode struct {
	roDir
	fs *filesystem
}

var (
	_ gofs.NodeOnAdder    = (*rootNode)(nil)
	_ gofs.NodeGetattrer  = (*rootNode)(nil)
	_ gofs.NodeStatfser   = (*rootNode)(nil)
	_ gofs.NodeGetattrer  = (*idDir)(nil)
	_ gofs.NodeLookuper   = (*idDir)(nil)
	_ gofs.NodeReaddirer  = (*idDir)(nil)
	_ gofs.NodeGetattrer  = (*volumesDir)(nil)
	_ gofs.NodeLookuper   = (*volumesDir)(nil)
	_ gofs.NodeReaddirer  = (*volumesDir)(nil)
	_ gofs.NodeGetattrer  = (*volumeNode)(nil)
	_ gofs.NodeLookuper   = (*volumeNode)(nil)
	_ gofs.NodeReaddirer  = (*volumeNode)(nil)
	_ gofs.NodeGetattrer  = (*imageNode)(nil)
	_ gofs.NodeOpener     = (*imageNode)(nil)
	_ gofs.NodeSetattrer  = (*imageNode)(nil)
	_ gofs.FileReader     = (*imageHandle)(nil)
	_ gofs.FileReleaser   = (*imageHandle)(nil)
	_ gofs.FileGetattrer  = (*imageHandle)(nil)
	_ gofs.NodeSetxattrer = (*imageNode)(nil)
)

const (
	rootIno       = 1
	byIDIno       = 2
	byVolumeIno   = 3
	byIDName      = "by-id"
	byVolumeName  = "by-volume"
	fsBlockSize   = 4096
	maxNameLength = 255
)

func (r *rootNode) OnAdd(ctx context.Context) {
	r.AddChild(byIDName, r.NewPersistentInode(ctx, &idDir{fs: r.fs},
		gofs.StableAttr{Mode: fuse.S_IFDIR, Ino: byIDIno}), false)
	r.AddChild(byVolumeName, r.NewPersistentInode(ctx, &volumesDir{fs: r.fs},
		gofs.StableAttr{Mode: fuse.S_IFDIR, Ino: byVolumeIno}), false)
}

func (r *rootNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.fs.dirAttr(&out.Attr, rootIno, r.fs.mounted)
	out.Nlink = 4
	return 0
}

// Statfs reports the total image size, so `df` on the mount says something
// useful; nothing is ever free.
func (r *rootNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	l, errno := r.fs.listing(ctx)
	if errno != 0 {
		return errno
	}
	var total uint64
	for _, e := range l.byID {
		total += (uint64(e.Size) + fsBlockSize - 1) / fsBlockSize
	}
	out.Blocks = total
	out.Files = uint64(len(l.byID))
	out.Bsize = fsBlockSize
	out.Frsize = fsBlockSize
	out.NameLen = maxNameLength
	return 0
}

// idDir is by-id/: one <backup-id>.img per backup.
type idDir struct {
	roDir
	fs *filesystem
}

func (d *idDir) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fs.dirAttr(&out.Attr, byIDIno, d.fs.mounted)
	return 0
}

func (d *idDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	l, errno := d.fs.listing(ctx)
	if errno != 0 {
		return nil, errno
	}
	e := l.byID[name]
	if e == nil {
		return nil, syscall.ENOENT
	}
	return d.fs.imageInode(ctx, &d.Inode, e, out), 0
}

func (d *idDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	l, errno := d.fs.listing(ctx)
	if errno != 0 {
		return nil, errno
	}
	ents := make([]fuse.DirEntry, 0, len(l.idNames))
	for _, n := range l.idNames {
		ents = append(ents, fuse.DirEntry{Name: n, Mode: fuse.S_IFREG, Ino: backupIno(l.byID[n].ID)})
	}
	return gofs.NewListDirStream(ents), 0
}

// volumesDir is by-volume/: one directory per volume name.
type volumesDir struct {
	roDir
	fs *filesystem
}

func (d *volumesDir) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fs.dirAttr(&out.Attr, byVolumeIno, d.fs.mounted)
	return 0
}

func (d *volumesDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	l, errno := d.fs.listing(ctx)
	if errno != 0 {
		return nil, errno
	}
	v := l.volumes[name]
	if v == nil {
		return nil, syscall.ENOENT
	}
	ino := volumeIno(name)
	d.fs.dirAttr(&out.Attr, ino, v.newest)
	return d.NewInode(ctx, &volumeNode{fs: d.fs, name: name},
		gofs.StableAttr{Mode: fuse.S_IFDIR, Ino: ino}), 0
}

func (d *volumesDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	l, errno := d.fs.listing(ctx)
	if errno != 0 {
		return nil, errno
	}
	ents := make([]fuse.DirEntry, 0, len(l.volNames))
	for _, n := range l.volNames {
		ents = append(ents, fuse.DirEntry{Name: n, Mode: fuse.S_IFDIR, Ino: volumeIno(n)})
	}
	return gofs.NewListDirStream(ents), 0
}

// volumeNode is by-volume/<volume>/: the volume's backups by creation time.
type volumeNode struct {
	roDir
	fs   *filesystem
	name string
}

func (d *volumeNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	mtime := d.fs.mounted
	if l, err := d.fs.cat.get(ctx); err == nil && l.volumes[d.name] != nil {
		mtime = l.volumes[d.name].newest
	}
	d.fs.dirAttr(&out.Attr, volumeIno(d.name), mtime)
	return 0
}

func (d *volumeNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	l, errno := d.fs.listing(ctx)
	if errno != 0 {
		return nil, errno
	}
	v := l.volumes[d.name]
	if v == nil || v.files[name] == nil {
		return nil, syscall.ENOENT
	}
	return d.fs.imageInode(ctx, &d.Inode, v.files[name], out), 0
}

// Readdir of a volume whose last backup went away lists nothing, like a
// removed directory that is still open.
func (d *volumeNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	l, errno := d.fs.listing(ctx)
	if errno != 0 {
		return nil, errno
	}
	v := l.volumes[d.name]
	if v == nil {
		return gofs.NewListDirStream(nil), 0
	}
	ents := make([]fuse.DirEntry, 0, len(v.names))
	for _, n := range v.names {
		ents = append(ents, fuse.DirEntry{Name: n, Mode: fuse.S_IFREG, Ino: backupIno(v.files[n].ID)})
	}
	return gofs.NewListDirStream(ents), 0
}

// imageInode returns the inode for e; both trees share it (same Ino), so a
// backup read via by-id and via by-volume shares one page cache.
func (f *filesystem) imageInode(ctx context.Context, parent *gofs.Inode, e *Entry, out *fuse.EntryOut) *gofs.Inode {
	f.fileAttr(&out.Attr, e)
	return parent.NewInode(ctx, &imageNode{fs: f, e: *e},
		gofs.StableAttr{Mode: fuse.S_IFREG, Ino: backupIno(e.ID)})
}

// imageNode is one backup image file.
type imageNode struct {
	gofs.Inode
	fs *filesystem
	e  Entry
}

func (n *imageNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.fileAttr(&out.Attr, &n.e)
	return 0
}

func (n *imageNode) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *imageNode) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EROFS
}

// Open opens the image once per file handle. Per-handle (rather than one
// shared, refcounted Image per backup) keeps the lifetime rule trivial: an
// Image lives exactly as long as the kernel's handle, with no map or lock on
// the open path; a loop device or dd opens once, so the extra OpenImage
// calls cost nothing that matters, and the Source caches chunks anyway.
func (n *imageNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	img, err := n.fs.src.OpenImage(ctx, n.e.ID)
	if err != nil {
		switch {
		case errors.Is(err, iofs.ErrNotExist):
			return nil, 0, syscall.ENOENT
		case ctx.Err() != nil:
			return nil, 0, syscall.EINTR
		}
		n.fs.log.Printf("volback fs: open backup %s: %v", n.e.ID, err)
		return nil, 0, syscall.EIO
	}
	if img.Size() != n.e.Size {
		n.fs.log.Printf("volback fs: backup %s: image is %d bytes but the catalog says %d; serving %d",
			n.e.ID, img.Size(), n.e.Size, min(img.Size(), n.e.Size))
	}
	h := &imageHandle{fs: n.fs, node: n, img: img, size: min(img.Size(), n.e.Size)}
	if !n.fs.track(h) {
		h.close()
		return nil, 0, syscall.ENODEV
	}
	// Backups never change, so the page cache stays valid across opens.
	// With direct IO, read(2) bypasses it but mmap still fills it, and
	// KEEP_CACHE keeps those pages too.
	flags = fuse.FOPEN_KEEP_CACHE
	if n.fs.directIO.Load() {
		flags |= fuse.FOPEN_DIRECT_IO
	}
	return h, flags, 0
}

// imageHandle is one open file. Reads go straight to Image.ReadAt, which is
// safe for concurrent use: no lock on the read path.
type imageHandle struct {
	fs   *filesystem
	node *imageNode
	img  Image
	size int64
}

func (h *imageHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.node.Getattr(ctx, h, out)
}

func (h *imageHandle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= h.size || off < 0 {
		return fuse.ReadResultData(nil), 0
	}
	if rem := h.size - off; int64(len(dest)) > rem {
		dest = dest[:rem]
	}
	var n int
	var err error
	if sr, ok := h.img.(SliceReader); ok {
		// No copy: the reply is written straight from the cached chunks.
		vecs, release, serr := sr.ReadSlices(off, len(dest))
		for _, v := range vecs {
			n += len(v)
		}
		if n == len(dest) && (serr == nil || serr == io.EOF) {
			return &slicesResult{release: release, vecs: vecs, n: n}, 0
		}
		release()
		err = serr
	} else {
		n, err = h.img.ReadAt(dest, off)
		if n == len(dest) && (err == nil || err == io.EOF) {
			return fuse.ReadResultData(dest), 0
		}
	}
	// A short read here would tell the kernel the file ends early (it would
	// zero-fill and shrink its idea of the size), so anything short of the
	// full range is an I/O error.
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	h.fs.log.Printf("volback fs: read backup %s at offset %d (%d bytes): %v", h.node.e.ID, off, len(dest), err)
	return nil, syscall.EIO
}

// Release closes the Image. A backup deleted while open was served until
// now, or failed reads with EIO once its data was gone; never wrong bytes
// (the Source verifies every chunk).
func (h *imageHandle) Release(context.Context) syscall.Errno {
	if h.fs.untrack(h) {
		h.close()
	}
	return 0
}

func (h *imageHandle) close() {
	if err := h.img.Close(); err != nil {
		h.fs.log.Printf("volback fs: close backup %s: %v", h.node.e.ID, err)
	}
}

// slicesResult is a read reply made of cached chunks: go-fuse writes it
// with writev (it has Slices) and then calls Done, which lets go of them.
type slicesResult struct {
	release func()
	vecs    [][]byte
	n       int
}

func (r *slicesResult) Slices() ([][]byte, fuse.Status) { return r.vecs, fuse.OK }

func (r *slicesResult) Size() int { return r.n }

// Bytes is for go-fuse's other write paths: the slices joined into buf.
func (r *slicesResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	buf = buf[:0]
	for _, v := range r.vecs {
		buf = append(buf, v...)
	}
	return buf, fuse.OK
}

func (r *slicesResult) Done() {
	if r.release != nil {
		r.release()
		r.release, r.vecs = nil, nil
	}
}
