package api

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/volback/volback/service"
)

// Metrics of the operations this process runs, whichever transport
// brought them (the socket, HTTP, the CLI in process): registered in each
// server's registry.
var (
	opsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "volback_operations_total",
		Help: "Operations run, by verb and result (ok, or the error's kind: not_found, invalid_state, quota_exceeded, forbidden, usage; error for volback's own failures).",
	}, []string{"verb", "result"})
	jobsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "volback_jobs_total",
		Help: "Backups and restores that started (were accepted) and ended, by kind (backup, restore) and status (available, error). Alert on increase(volback_jobs_total{kind=\"backup\",status=\"error\"}[1d]) > 0.",
	}, []string{"kind", "status"})
	jobSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "volback_job_duration_seconds",
		Help:    "How long accepted backups and restores ran (after waiting for a worker), by kind and status.",
		Buckets: prometheus.ExponentialBuckets(0.25, 2, 17), // 0.25 s to about 4.5 h
	}, []string{"kind", "status"})
)

// jobKind names the job a Background operation runs, for metrics.
func jobKind(verb string) string {
	switch verb {
	case "backup-create":
		return "backup"
	case "backup-restore", "create": // create: from a backup (only those are accepted)
		return "restore"
	}
	return verb
}

// observe runs one operation and counts it. onAccept, when set, is told
// of a Background operation's acceptance first (the HTTP API answers
// from it and waits there for a worker); the job's duration is measured
// from when onAccept returns.
func observe(ctx context.Context, o *Op, onAccept service.AcceptedFunc, call func(context.Context) (any, error)) (any, error) {
	var started time.Time // set on the job's goroutine, read after call returns on it
	if o.Background {
		ctx = service.WithAccepted(ctx, func(c context.Context, v any) {
			if !started.IsZero() {
				return // once
			}
			if onAccept != nil {
				onAccept(c, v)
			}
			started = time.Now()
		})
	}
	v, err := call(ctx)
	result := "ok"
	if err != nil {
		result = service.KindOf(err)
		if result == "" {
			result = "error"
		}
	}
	opsTotal.WithLabelValues(o.Verb, result).Inc()
	if !started.IsZero() {
		status := "available"
		if err != nil {
			status = "error"
		}
		jobsTotal.WithLabelValues(jobKind(o.Verb), status).Inc()
		jobSeconds.WithLabelValues(jobKind(o.Verb), status).Observe(time.Since(started).Seconds())
	}
	return v, err
}

// registry is a server's metrics: the operations', the pool's, the
// catalog's and the repositories' (read when scraped), the HTTP
// requests', Go's and the process's.
func (h *Server) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(opsTotal, jobsTotal, jobSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "volback_api_jobs_running",
		Help: "Backups and restores the HTTP API runs now (at most [api] jobs)."}, func() float64 { return float64(len(h.pool)) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "volback_api_jobs_capacity",
		Help: "How many backups and restores the HTTP API runs at once ([api] jobs)."}, func() float64 { return float64(cap(h.pool)) }))
	st := func(f func(service.Stats) int64) func() float64 {
		return func() float64 { return float64(f(h.s.Stats())) }
	}
	for _, c := range []struct {
		name, help string
		f          func(service.Stats) int64
	}{
		{"volback_backup_read_bytes_total", "Bytes of chunks backups read from volumes (holes are not read).", func(s service.Stats) int64 { return s.BackupReadBytes }},
		{"volback_backup_zero_bytes_total", "Of the bytes read, all-zero chunks: never stored.", func(s service.Stats) int64 { return s.BackupZeroBytes }},
		{"volback_backup_deduplicated_bytes_total", "Of the bytes read, chunks the repository already held: not stored again.", func(s service.Stats) int64 { return s.BackupDedupBytes }},
		{"volback_backup_new_bytes_total", "Of the bytes read, new chunks, before compression.", func(s service.Stats) int64 { return s.BackupNewBytes }},
		{"volback_backup_stored_bytes_total", "Bytes the new chunks took in packs, compressed.", func(s service.Stats) int64 { return s.BackupStoredBytes }},
		{"volback_restore_written_bytes_total", "Bytes restores wrote to volumes.", func(s service.Stats) int64 { return s.RestoreBytes }},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help}, st(c.f)))
	}
	reg.MustRegister(&catalogCollector{s: h.s})
	return reg
}

// catalogCollector reports the catalog's state when scraped: backups and
// volumes by status, each volume's newest available backup, and each
// repository's size (listed at most every repoEvery).
type catalogCollector struct {
	s *service.Service

	mu       sync.Mutex
	repoAt   time.Time
	repos    []service.RepositoryUsage
	repoFail bool
}

// repoEvery bounds how often a scrape lists the repositories.
var repoEvery = 30 * time.Second

var (
	backupsDesc = prometheus.NewDesc("volback_backups", "Backups in the catalog, by project and status.", []string{"project", "status"}, nil)
	volumesDesc = prometheus.NewDesc("volback_volumes", "Volumes in the catalog, by project and status.", []string{"project", "status"}, nil)
	lastDesc    = prometheus.NewDesc("volback_volume_last_backup_timestamp_seconds",
		"When each volume's newest available backup was taken (data_timestamp); absent for a volume never backed up. Alert on time() - this > your backup interval.",
		[]string{"project", "volume_id", "volume_name"}, nil)
	repoBytesDesc   = prometheus.NewDesc("volback_repository_bytes", "Bytes of every object in a zone's repository (packs, manifests, records).", []string{"zone", "repository"}, nil)
	repoObjectsDesc = prometheus.NewDesc("volback_repository_objects", "Objects in a zone's repository.", []string{"zone", "repository"}, nil)
	repoErrDesc     = prometheus.NewDesc("volback_repository_list_failed", "1 when listing a repository for its size failed at the last try.", nil, nil)
)

func (c *catalogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{backupsDesc, volumesDesc, lastDesc, repoBytesDesc, repoObjectsDesc, repoErrDesc} {
		ch <- d
	}
}

func (c *catalogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx := service.WithIdentity(context.Background(), service.Identity{UID: -1, User: "metrics", Project: service.DefaultProject, Role: service.RoleAdmin})
	type key struct{ project, status string }
	if bs, err := c.s.ListBackups(ctx, "", true); err == nil {
		n := map[key]int{}
		last := map[string]service.BackupView{}
		for _, b := range bs {
			n[key{b.ProjectID, b.Status}]++
			if l, ok := last[b.VolumeID]; b.Status == "available" && (!ok || b.DataTimestamp.After(l.DataTimestamp)) {
				last[b.VolumeID] = b
			}
		}
		for k, v := range n {
			ch <- prometheus.MustNewConstMetric(backupsDesc, prometheus.GaugeValue, float64(v), k.project, k.status)
		}
		for _, b := range last {
			ch <- prometheus.MustNewConstMetric(lastDesc, prometheus.GaugeValue, float64(b.DataTimestamp.UnixMilli())/1000, b.ProjectID, b.VolumeID, b.VolumeName)
		}
	}
	if vs, err := c.s.ListVolumes(ctx, true); err == nil {
		n := map[key]int{}
		for _, v := range vs {
			n[key{v.ProjectID, v.Status}]++
		}
		for k, v := range n {
			ch <- prometheus.MustNewConstMetric(volumesDesc, prometheus.GaugeValue, float64(v), k.project, k.status)
		}
	}
	c.mu.Lock()
	if time.Since(c.repoAt) > repoEvery {
		lctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		repos, err := c.s.RepositoryUsage(lctx)
		cancel()
		c.repos, c.repoFail, c.repoAt = repos, err != nil, time.Now()
	}
	repos, fail := c.repos, c.repoFail
	c.mu.Unlock()
	for _, r := range repos {
		ch <- prometheus.MustNewConstMetric(repoBytesDesc, prometheus.GaugeValue, float64(r.Bytes), r.Zone, r.Repository)
		ch <- prometheus.MustNewConstMetric(repoObjectsDesc, prometheus.GaugeValue, float64(r.Objects), r.Zone, r.Repository)
	}
	failed := 0.0
	if fail {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(repoErrDesc, prometheus.GaugeValue, failed)
}

// metricsHandler serves a registry in Prometheus' text format.
func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// MountMetrics serves the metrics of a mount process: its chunk cache's
// hits and misses, Go's and the process's.
func MountMetrics(ms *service.MountSource) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "volback_mount_cache_hits_total",
		Help: "Chunk reads of the mount that its cache answered."}, func() float64 { h, _ := ms.CacheStats(); return float64(h) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "volback_mount_cache_misses_total",
		Help: "Chunk reads of the mount that fetched the chunk from its repository."}, func() float64 { _, m := ms.CacheStats(); return float64(m) }))
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(reg))
	return mux
}
