package api

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/volback/volback/service"
)

// maxLimit is the most items one list answer holds (Cinder's
// osapi_max_limit); more are reached through the next link.
const maxLimit = 1000

// listing describes how a collection of T is filtered, sorted, paged and
// rendered, as Cinder's list and detail calls are.
type listing[T any] struct {
	collection string // "backups"
	// fields are the values filters and sort keys compare, by name.
	fields map[string]func(T) any
	// aliases are other names of fields (display_name for name).
	aliases map[string]string
	// ignored are query parameters accepted and not used.
	ignored []string
	id      func(T) string
	summary func(*Request, T) map[string]any
	detail  func(*Request, T) map[string]any
}

// pagination and listing parameters every list accepts.
var listParams = []string{"limit", "marker", "offset", "sort", "sort_key", "sort_dir", "all_tenants", "with_count"}

// routes are the collection's list and detail calls, GET collection and
// GET collection/detail: the caller's project's items, or with all_tenants
// every project's (for an admin).
func (l listing[T]) routes() []Route[service.Ref, []T] {
	bind := func(r *Request) (service.Ref, error) {
		all, err := r.Flag("all_tenants")
		return service.Ref{AllProjects: all}, err
	}
	return []Route[service.Ref, []T]{
		{Method: http.MethodGet, Path: l.collection, Status: http.StatusOK, Bind: bind,
			Render: func(r *Request, items []T) any { return l.render(r, items, false) }},
		{Method: http.MethodGet, Path: l.collection + "/detail", Status: http.StatusOK, Bind: bind,
			Render: func(r *Request, items []T) any { return l.render(r, items, true) }},
	}
}

// render answers a list call: filters (exact matches on fields), sorts
// (default newest first), pages (limit, marker, offset) and renders items
// in summary or detail form; count when asked (3.45). The result is an
// error for a bad parameter.
func (l listing[T]) render(r *Request, items []T, detail bool) any {
	q := r.HTTP.URL.Query()
	// Filters.
	var bad []string
	for k, vs := range q {
		name := l.name(k)
		if slices.Contains(listParams, k) || slices.Contains(l.ignored, k) {
			continue
		}
		f, ok := l.fields[name]
		if !ok || name == "created_at" || name == "updated_at" {
			bad = append(bad, k)
			continue
		}
		if k == "project_id" && !r.Admin() {
			continue // a member sees its own project anyway
		}
		items = slices.DeleteFunc(items, func(t T) bool { return fmt.Sprint(deref(f(t))) != vs[0] })
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return service.Errorf(service.ErrUsage, "Invalid filters %s are found in query options; %s filter on %s",
			strings.Join(bad, ", "), l.collection, strings.Join(l.filterNames(), ", "))
	}
	// Sort.
	keys, err := l.sortKeys(r)
	if err != nil {
		return err
	}
	slices.SortStableFunc(items, func(a, b T) int {
		for _, k := range keys {
			if c := compare(l.fields[k.name](a), l.fields[k.name](b)); c != 0 {
				if k.desc {
					return -c
				}
				return c
			}
		}
		return 0
	})
	total := len(items)
	// Page.
	if m := q.Get("marker"); m != "" {
		i := slices.IndexFunc(items, func(t T) bool { return l.id(t) == m })
		if i < 0 {
			return service.Errorf(service.ErrUsage, "marker [%s] not found", m)
		}
		items = items[i+1:]
	}
	if o := q.Get("offset"); o != "" {
		n, err := strconv.Atoi(o)
		if err != nil || n < 0 {
			return service.Errorf(service.ErrUsage, "Invalid offset %q: give a non-negative integer", o)
		}
		items = items[min(n, len(items)):]
	}
	limit := maxLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return service.Errorf(service.ErrUsage, "Invalid limit %q: give a non-negative integer", s)
		}
		limit = min(n, maxLimit)
	}
	more := len(items) > limit
	items = items[:min(limit, len(items))]
	out := make([]map[string]any, 0, len(items))
	for _, t := range items {
		if detail {
			out = append(out, l.detail(r, t))
		} else {
			out = append(out, l.summary(r, t))
		}
	}
	body := map[string]any{l.collection: out}
	if more && len(items) > 0 {
		next := url.Values{}
		for k, v := range q {
			if k != "marker" && k != "offset" {
				next[k] = v
			}
		}
		next.Set("marker", l.id(items[len(items)-1]))
		path := r.HTTP.URL.Path
		body[l.collection+"_links"] = []map[string]string{{"rel": "next", "href": r.base + path + "?" + next.Encode()}}
	}
	if withCount, err := r.Flag("with_count"); err != nil {
		return err
	} else if withCount && r.AtLeast(45) {
		body["count"] = total
	}
	return body
}

// name is the field a query key or sort key names.
func (l listing[T]) name(k string) string {
	if a, ok := l.aliases[k]; ok {
		return a
	}
	return k
}

func (l listing[T]) filterNames() []string {
	var n []string
	for k := range l.fields {
		if k != "created_at" && k != "updated_at" {
			n = append(n, k)
		}
	}
	slices.Sort(n)
	return n
}

type sortKey struct {
	name string
	desc bool
}

// sortKeys reads sort=key[:dir],... or sort_key/sort_dir; the default is
// newest first.
func (l listing[T]) sortKeys(r *Request) ([]sortKey, error) {
	var specs []string
	if s := r.Query("sort"); s != "" {
		specs = strings.Split(s, ",")
	} else if k := r.Query("sort_key"); k != "" {
		specs = []string{k + ":" + cmp.Or(r.Query("sort_dir"), "desc")}
	}
	var keys []sortKey
	for _, s := range specs {
		k, dir, _ := strings.Cut(strings.TrimSpace(s), ":")
		name := l.name(k)
		if _, ok := l.fields[name]; !ok {
			return nil, service.Errorf(service.ErrUsage, "Invalid sort key %q: %s sort by %s", k, l.collection, strings.Join(l.sortable(), ", "))
		}
		switch strings.ToLower(cmp.Or(dir, "desc")) {
		case "asc":
			keys = append(keys, sortKey{name, false})
		case "desc":
			keys = append(keys, sortKey{name, true})
		default:
			return nil, service.Errorf(service.ErrUsage, "Invalid sort direction %q: give asc or desc", dir)
		}
	}
	return append(keys, sortKey{"created_at", true}, sortKey{"id", true}), nil
}

func (l listing[T]) sortable() []string {
	var n []string
	for k := range l.fields {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// compare orders field values: numbers, times and strings; nil first.
func compare(a, b any) int {
	a, b = deref(a), deref(b)
	switch x := a.(type) {
	case int64:
		if y, ok := b.(int64); ok {
			return cmp.Compare(x, y)
		}
	case time.Time:
		if y, ok := b.(time.Time); ok {
			return x.Compare(y)
		}
	case nil:
		if b == nil {
			return 0
		}
		return -1
	}
	if b == nil {
		return 1
	}
	return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
}

// deref makes a *string field comparable: its string, or nil.
func deref(v any) any {
	if p, ok := v.(*string); ok {
		if p == nil {
			return nil
		}
		return *p
	}
	return v
}
