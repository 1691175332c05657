package pipeline

import (
	"sort"

	"github.com/volback/volback/drivers/volume"
)

// Range is the chunks [First, End) of a volume.
type Range struct{ First, End int64 }

// Ranges returns the chunks that overlap the extents, sorted and merged,
// for a volume of size bytes in chunkSize chunks. Extents may be unsorted
// and overlap; parts past size are ignored. Memory is one Range per
// extent at most, never one entry per chunk.
func Ranges(extents []volume.Extent, size int64, chunkSize int) []Range {
	cs := int64(chunkSize)
	var out []Range
	for _, e := range extents {
		if e.Length <= 0 || e.Offset >= size || e.Offset < 0 {
			continue
		}
		end := min(e.Offset+e.Length, size)
		out = append(out, Range{First: e.Offset / cs, End: (end-1)/cs + 1})
	}
	return merge(out)
}

// WholeRanges returns the chunks lying wholly inside the extents (a chunk
// partly covered is not listed), sorted and merged. The volume's short
// last chunk counts as whole when an extent covers it to size.
func WholeRanges(extents []volume.Extent, size int64, chunkSize int) []Range {
	cs := int64(chunkSize)
	var out []Range
	for _, e := range extents {
		if e.Length <= 0 || e.Offset >= size || e.Offset < 0 {
			continue
		}
		end := min(e.Offset+e.Length, size)
		first := (e.Offset + cs - 1) / cs
		last := end / cs
		if end == size {
			last = (end + cs - 1) / cs
		}
		if first < last {
			out = append(out, Range{First: first, End: last})
		}
	}
	return merge(out)
}

// Subtract returns the chunks of a that are in no range of b (both sorted
// and merged).
func Subtract(a, b []Range) []Range {
	var out []Range
	j := 0
	for _, r := range a {
		for j < len(b) && b[j].End <= r.First {
			j++
		}
		cur := r.First
		for k := j; k < len(b) && b[k].First < r.End; k++ {
			if b[k].First > cur {
				out = append(out, Range{cur, b[k].First})
			}
			cur = max(cur, b[k].End)
		}
		if cur < r.End {
			out = append(out, Range{cur, r.End})
		}
	}
	return out
}

// Count is the number of chunks in rs.
func Count(rs []Range) int64 {
	var n int64
	for _, r := range rs {
		n += r.End - r.First
	}
	return n
}

func merge(rs []Range) []Range {
	sort.Slice(rs, func(i, j int) bool { return rs[i].First < rs[j].First })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.First <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

// cursor walks sorted ranges slot by slot.
type cursor struct {
	ranges []Range
	i      int
}

// within returns the parts of the ranges inside [first, end); calls must
// come with ascending, non-overlapping windows.
func (c *cursor) within(first, end int64) []Range {
	for c.i < len(c.ranges) && c.ranges[c.i].End <= first {
		c.i++
	}
	var out []Range
	for k := c.i; k < len(c.ranges) && c.ranges[k].First < end; k++ {
		out = append(out, Range{First: max(c.ranges[k].First, first), End: min(c.ranges[k].End, end)})
	}
	return out
}
