package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// listColumns are the columns of list tables, as Cinder's client shows them.
var listColumns = map[string][]string{
	"volume":   {"id", "name", "status", "size", "availability_zone", "path"},
	"backup":   {"id", "volume_id", "status", "name", "size", "object_count", "is_incremental", "created_at"},
	"gc":       {"repository", "packs_deleted", "packs_repacked", "orphan_packs_deleted", "bytes_freed"},
	"check":    {"repository", "backups", "chunks", "packs", "chunks_read", "references_ok"},
	"quota":    {"type", "in_use", "reserved", "limit"},
	"service":  {"binary", "host", "zone", "status", "state", "updated_at", "disabled_reason"},
	"snapshot": {"id", "volume_id", "status", "name", "size", "method"},
}

// verbFields are, for a table, the properties Cinder's client prints
// after a create or an import, or the columns of a list (also when it is
// empty); -f json prints whole records.
var verbFields = map[string][]string{
	"backup-create": {"id", "name", "volume_id"},
	"backup-import": {"id", "name"},
	"list":          listColumns["volume"],
	"backup-list":   listColumns["backup"],
	"snapshot-list": listColumns["snapshot"],
	"service-list":  listColumns["service"],
	"quota-usage":   listColumns["quota"],
	"repo-gc":       listColumns["gc"],
	"repo-check":    listColumns["check"],
}

// print writes v as JSON, or as a Property/Value table (one record) or a
// column table (a list). only, when set, limits a record's table to
// those properties.
func print(w io.Writer, format string, v any, only ...string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if reflect.Indirect(reflect.ValueOf(v)).Kind() == reflect.Slice {
		var rows []map[string]any
		if err := json.Unmarshal(raw, &rows); err != nil {
			return err
		}
		return listTable(w, rows, only)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		return err
	}
	keys := make([]string, 0, len(rec))
	for k := range rec {
		if len(only) == 0 || slices.Contains(only, k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	cells := [][]string{{"Property", "Value"}}
	for _, k := range keys {
		cells = append(cells, []string{k, cell(rec[k])})
	}
	table(w, cells)
	return nil
}

func listTable(w io.Writer, rows []map[string]any, cols []string) error {
	if len(cols) == 0 { // every list verb names its columns (verbFields)
		cols = listColumns["backup"]
	}
	head := make([]string, len(cols))
	for i, c := range cols {
		head[i] = title(c)
	}
	cells := [][]string{head}
	for _, r := range rows {
		line := make([]string, len(cols))
		for i, c := range cols {
			line[i] = cell(r[c])
		}
		cells = append(cells, line)
	}
	table(w, cells)
	return nil
}

func title(col string) string {
	words := strings.Split(col, "_")
	for i, w := range words {
		if w == "id" {
			words[i] = "ID"
		} else {
			words[i] = strings.ToUpper(w[:1]) + w[1:]
		}
	}
	return strings.Join(words, " ")
}

func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case float64:
		return fmt.Sprintf("%.0f", x)
	case string:
		return x
	default:
		return fmt.Sprint(x)
	}
}

// table draws cells (first row = header) with +---+ borders.
func table(w io.Writer, cells [][]string) {
	widths := make([]int, len(cells[0]))
	for _, row := range cells {
		for i, c := range row {
			widths[i] = max(widths[i], len(c))
		}
	}
	var sep strings.Builder
	sep.WriteString("+")
	for _, n := range widths {
		sep.WriteString(strings.Repeat("-", n+2) + "+")
	}
	fmt.Fprintln(w, sep.String())
	for r, row := range cells {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range row {
			fmt.Fprintf(&b, " %-*s |", widths[i], c)
		}
		fmt.Fprintln(w, b.String())
		if r == 0 {
			fmt.Fprintln(w, sep.String())
		}
	}
	fmt.Fprintln(w, sep.String())
}
