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

// createdFields are the properties Cinder's client prints after a create
// or an import; -f json prints the whole record.
var createdFields = map[string][]string{
	"backup-create": {"id", "name", "volume_id"},
	"backup-import": {"id", "name"},
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
		return listTable(w, rows)
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

func listTable(w io.Writer, rows []map[string]any) error {
	cols := listColumns["backup"]
	if len(rows) > 0 {
		switch {
		case rows[0]["path"] != nil:
			cols = listColumns["volume"]
		case rows[0]["binary"] != nil:
			cols = listColumns["service"]
		case rows[0]["method"] != nil:
			cols = listColumns["snapshot"]
		case rows[0]["in_use"] != nil:
			cols = listColumns["quota"]
		case rows[0]["references_ok"] != nil:
			cols = listColumns["check"]
		case rows[0]["repository"] != nil:
			cols = listColumns["gc"]
		}
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
