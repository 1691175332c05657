package service

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// latentSource is a file source whose reads take a while, as round trips
// to a Ceph OSD do, and that asks for several readers (as RBD's does).
type latentSource struct {
	volume.Source
	readers        int
	inFlight, peak atomic.Int32
	failAt         int64 // a read at this offset fails; -1 never
}

func (s *latentSource) InFlight() int { return s.readers }

func (s *latentSource) ReadAt(p []byte, off int64) (int, error) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for old := s.peak.Load(); n > old && !s.peak.CompareAndSwap(old, n); old = s.peak.Load() {
	}
	time.Sleep(2 * time.Millisecond)
	if off == s.failAt {
		return 0, errors.New("the OSD went away")
	}
	return s.Source.ReadAt(p, off)
}

func TestParallelReaderKeepsReadsInFlight(t *testing.T) {
	ctx := context.Background()
	s := newService(t)
	img := filepath.Join(t.TempDir(), "vol.img")
	data := writeImage(t, img, 32<<20, 9)
	if _, err := s.Manage(ctx, ManageRequest{Name: "vol", Source: img}); err != nil {
		t.Fatal(err)
	}
	var src *latentSource
	s.openSource = func(v *index.Volume) (volume.Source, error) {
		f, err := volume.OpenSource(v.Path)
		src = &latentSource{Source: f, readers: 4, failAt: -1}
		return src, err
	}
	b, err := s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := src.peak.Load(); p < 2 || p > 4 {
		t.Errorf("at most %d reads were in flight; a source asking for 4 readers should get 2 to 4", p)
	}
	if got := restoreBytes(t, s, b.ID); !bytes.Equal(got, data) {
		t.Fatal("restore of a backup read by parallel readers differs from the volume")
	}

	// A read that fails stops the backup, naming where.
	s.openSource = func(v *index.Volume) (volume.Source, error) {
		f, err := volume.OpenSource(v.Path)
		src = &latentSource{Source: f, readers: 4, failAt: 17 << 20}
		return src, err
	}
	_, err = s.CreateBackup(ctx, BackupRequest{Volume: "vol"}, nil)
	if err == nil || !strings.Contains(err.Error(), "byte offset 17825792") || !strings.Contains(err.Error(), "the OSD went away") {
		t.Fatalf("backup with a failing read: %v; want the read's error and offset", err)
	}
	mustCheck(t, s)
}
