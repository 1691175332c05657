package service

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIncrementalTiming times incrementals of a 1 GiB image of 65,536
// distinct 16 KiB chunks (the reference list of a 4 GiB volume at 64 KiB
// chunks) after 1% of its chunks changed at scattered places: what
// counting the references costs an incremental. It runs only with
// VOLBACK_TIMING=N (incrementals to time) and prints one line each; its
// API is the service's public one, so the same file times older trees.
func TestIncrementalTiming(t *testing.T) {
	n := envInt("VOLBACK_TIMING", 0)
	if n == 0 {
		t.Skip("set VOLBACK_TIMING=N to time N incrementals")
	}
	const chunk, chunks = 16 << 10, 1 << 16
	dir := t.TempDir()
	conf := fmt.Sprintf("chunk_size = \"16K\"\n[zones.nova]\nrepository = %q\n", "file://"+filepath.Join(dir, "repo"))
	if err := os.WriteFile(filepath.Join(dir, ConfigName), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := unlimitedQuota(s); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "vol.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, chunk)
	stamp := func(i int, gen uint64) { // a distinct, cheap to compress chunk
		binary.LittleEndian.PutUint64(buf[0:], uint64(i)+1)
		binary.LittleEndian.PutUint64(buf[8:], gen)
	}
	for i := range chunks {
		stamp(i, 0)
		if _, err := f.WriteAt(buf, int64(i)*chunk); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.Manage(ctx, ManageRequest{Name: "v", Source: img})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.CreateBackup(ctx, BackupRequest{Volume: v.ID}, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("full backup: %v", time.Since(start).Round(time.Millisecond))
	r := rand.New(rand.NewPCG(1, 2))
	for k := 1; k <= n; k++ {
		for range chunks / 100 {
			i := r.IntN(chunks)
			stamp(i, uint64(k))
			if _, err := f.WriteAt(buf, int64(i)*chunk); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		bv, err := s.CreateBackup(ctx, BackupRequest{Volume: v.ID, Incremental: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("incremental %d: %v (%d chunks)", k, time.Since(start).Round(time.Millisecond), bv.ObjectCount)
	}
	f.Close()
}
