package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/volback/volback/service"
)

// listColumns are the columns of list tables, as Cinder's client shows
// them (plus the volume's name beside its id), by the type listed: an
// empty list still prints its header.
var listColumns = map[reflect.Type][]string{
	reflect.TypeFor[service.VolumeView]():   {"id", "name", "status", "size", "availability_zone", "path"},
	reflect.TypeFor[service.BackupView]():   {"id", "volume_id", "volume_name", "status", "name", "size", "object_count", "is_incremental", "created_at", "availability_zone", "container"},
	reflect.TypeFor[service.GCReport]():     {"repository", "packs_deleted", "packs_repacked", "orphan_packs_deleted", "bytes_freed"},
	reflect.TypeFor[service.CheckReport]():  {"repository", "backups", "chunks", "packs", "chunks_read", "references_ok", "unreferenced_packs"},
	reflect.TypeFor[service.RepairReport](): {"repository", "chunks_checked", "chunks_relocated", "chunks_lost", "references_fixed", "damaged", "rewritten"},
	reflect.TypeFor[service.QuotaUsage]():   {"type", "in_use", "reserved", "limit"},
	reflect.TypeFor[service.ServiceView]():  {"binary", "host", "zone", "status", "state", "updated_at", "disabled_reason"},
	reflect.TypeFor[service.SnapshotView](): {"id", "volume_id", "status", "name", "size", "method"},
}

// createdFields are the properties Cinder's client prints after a create
// or an import; -f json prints the whole record.
var createdFields = map[string][]string{
	"backup-create": {"id", "name", "volume_id"},
	"backup-import": {"id", "name"},
}

// print writes v as JSON, or as a Property/Value table (one record) or a
// column table (a list). only, when set, limits a record's table to those
// properties.
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
	if rv := reflect.Indirect(reflect.ValueOf(v)); rv.Kind() == reflect.Slice {
		var rows []map[string]any
		if err := json.Unmarshal(raw, &rows); err != nil {
			return err
		}
		return listTable(w, listColumns[rv.Type().Elem()], rows)
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

// listTable prints rows under cols; with no columns defined for the type,
// every key of the first row, sorted.
func listTable(w io.Writer, cols []string, rows []map[string]any) error {
	if cols == nil && len(rows) > 0 {
		for k := range rows[0] {
			cols = append(cols, k)
		}
		sort.Strings(cols)
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
