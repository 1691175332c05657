package index

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/volback/volback/chunkstore"
)

// TestRSS100kChunks puts 100,000 chunk entries in batches of MaxBatch,
// each batch with a backup record as a backup does, reads them all back,
// and checks the peak RSS (VmHWM) of a fresh child process doing only that.
// It runs twice: with Go's default GC pacing against the whole process's
// 96 MiB budget, and with the soft memory limit the binary should set
// (GOMEMLIMIT=32MiB) against 64 MiB, leaving the data path its share.
func TestRSS100kChunks(t *testing.T) {
	if os.Getenv("VOLBACK_INDEX_CHILD") == "rss" {
		rssChild()
		return
	}
	if testing.Short() {
		t.Skip("short")
	}
	for _, tc := range []struct {
		memLimit string
		budget   int64
	}{{"off", 96 << 20}, {"32MiB", 64 << 20}} {
		cmd := child(t, "rss", t.TempDir(), "TestRSS100kChunks")
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+tc.memLimit)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		var before, peak int64
		for _, line := range strings.Split(string(out), "\n") {
			if _, err := fmt.Sscanf(line, "RSS before=%d peak=%d", &before, &peak); err == nil {
				break
			}
		}
		if peak == 0 {
			t.Fatalf("no RSS line from child:\n%s", out)
		}
		t.Logf("100k chunk entries, GOMEMLIMIT=%s: VmHWM %.1f MiB (%.1f MiB at start)",
			tc.memLimit, float64(peak)/(1<<20), float64(before)/(1<<20))
		if raceEnabled {
			t.Log("race detector inflates memory; budget not checked")
			continue
		}
		if peak > tc.budget {
			t.Errorf("GOMEMLIMIT=%s: peak RSS %.1f MiB over the %d MiB budget",
				tc.memLimit, float64(peak)/(1<<20), tc.budget>>20)
		}
	}
}

func rssChild() {
	fail := func(err error) {
		fmt.Println("FAIL:", err)
		os.Exit(3)
	}
	before := vmHWM()
	c, err := Open(os.Getenv("VOLBACK_INDEX_DIR"), Options{})
	if err != nil {
		fail(err)
	}
	const n = 100_000
	for start := 0; start < n; start += MaxBatch {
		err := c.Update(func(tx *Tx) error {
			for i := start; i < start+MaxBatch && i < n; i++ {
				if err := tx.PutChunk(testRepo, chunkID(uint64(i)), testChunk(uint64(i))); err != nil {
					return err
				}
			}
			return tx.PutBackup(&Backup{ID: "bk", Status: StatusCreating, RefsApplied: start})
		})
		if err != nil {
			fail(err)
		}
	}
	// Read back: every entry by id, then one full scan.
	err = c.View(func(tx *Tx) error {
		for i := range n {
			ch, ok, err := tx.Chunk(testRepo, chunkID(uint64(i)))
			if err != nil || !ok || ch != testChunk(uint64(i)) {
				return fmt.Errorf("chunk %d: %+v %v %v", i, ch, ok, err)
			}
		}
		seen := 0
		err := tx.Chunks(testRepo, func(chunkstore.ID, Chunk) error { seen++; return nil })
		if err == nil && seen != n {
			err = fmt.Errorf("scan saw %d chunks, want %d", seen, n)
		}
		return err
	})
	if err != nil {
		fail(err)
	}
	if err := c.Close(); err != nil {
		fail(err)
	}
	fmt.Printf("RSS before=%d peak=%d\n", before, vmHWM())
	os.Exit(0)
}

// vmHWM is the process's peak resident set size in bytes.
func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}
