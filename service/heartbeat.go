package service

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/volback/volback/index"
)

// Cinder's names and its default service_down_time; volback's report
// interval is longer than Cinder's 10 s since each beat opens every zone's
// repository.
const (
	DefaultReportInterval  = 30 * time.Second
	DefaultServiceDownTime = 60 * time.Second
)

// heartbeat is a long-lived owner's periodic check of its zones
// (StartHeartbeat). An owner without one (a command that owns the catalog
// for its own run) checks the zones when service-list asks.
type heartbeat struct {
	mu    sync.Mutex
	first chan struct{}   // closed once every zone was checked once; nil: no heartbeat runs
	fresh map[string]bool // zones whose repository the first backup creates
}

// checkHeartbeat parses report_interval and service_down_time (defaults
// when unset): the owner checks its zones every report_interval, and
// service-list shows a zone down when its last heartbeat is older than
// service_down_time, which must be longer.
func (c *Config) checkHeartbeat(path string) error {
	parse := func(key, text string, def time.Duration) (time.Duration, error) {
		if text == "" {
			return def, nil
		}
		d, err := time.ParseDuration(text)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("config %s: %s %q: must be a positive duration such as \"30s\"", path, key, text)
		}
		return d, nil
	}
	var err error
	if c.ReportInterval, err = parse("report_interval", c.ReportIntervalText, DefaultReportInterval); err != nil {
		return err
	}
	if c.ServiceDownTime, err = parse("service_down_time", c.ServiceDownTimeText, DefaultServiceDownTime); err != nil {
		return err
	}
	if c.ServiceDownTime <= c.ReportInterval {
		return fmt.Errorf("config %s: service_down_time %v must be longer than report_interval %v, else every zone shows down between two heartbeats",
			path, c.ServiceDownTime, c.ReportInterval)
	}
	return nil
}

// StartHeartbeat makes this owner check every zone's repository now and
// then every report_interval, recording a heartbeat in the catalog for
// each that answers (and the error for each that does not), until Close.
// Long-lived owners (volback serve) start it, so that service-list shows
// an owner that stalls as down; a command that owns the catalog only for
// its own run does not, so it opens no repository it does not use. A
// config made without LoadConfig (zero durations) gets the defaults.
// Calls after the first do nothing.
func (s *Service) StartHeartbeat() {
	s.hb.mu.Lock()
	defer s.hb.mu.Unlock()
	if s.hb.first != nil {
		return
	}
	first := make(chan struct{})
	s.hb.first = first
	every := cmp.Or(s.cfg.ReportInterval, DefaultReportInterval)
	zones := s.configuredZones()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.beat(s.bgCtx, zones)
		close(first)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.bgCtx.Done():
				return
			case <-t.C:
				s.beat(s.bgCtx, zones)
			}
		}
	}()
}

// zoneRepo is a zone and its repository's URL.
type zoneRepo struct{ zone, url string }

// configuredZones lists the configured zones. The heartbeat reads them once,
// when it starts: its loop never reads s.cfg (which tests adjust after
// Open).
func (s *Service) configuredZones() []zoneRepo {
	var zones []zoneRepo
	for _, zone := range s.cfg.ZoneNames() {
		zones = append(zones, zoneRepo{zone, s.cfg.Zones[zone].Repository})
	}
	return zones
}

// checkedZones returns once every zone's state is known: after the
// heartbeat's first check when one runs, else after a check made now.
func (s *Service) checkedZones(ctx context.Context) error {
	s.hb.mu.Lock()
	first := s.hb.first
	s.hb.mu.Unlock()
	if first == nil {
		s.beat(ctx, s.configuredZones())
		return ctx.Err()
	}
	select {
	case <-first:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// beat probes every zone's repository once and records the outcome.
func (s *Service) beat(ctx context.Context, zones []zoneRepo) {
	for _, z := range zones {
		zone, url := z.zone, z.url
		perr := probe(ctx, url)
		if ctx.Err() != nil {
			return // Close: nothing was learnt about the zone
		}
		fresh := perr != nil && !s.zoneUsed(url) // created by its first backup
		if fresh {
			perr = nil
		}
		s.hb.mu.Lock()
		if s.hb.fresh == nil {
			s.hb.fresh = map[string]bool{}
		}
		s.hb.fresh[zone] = fresh
		s.hb.mu.Unlock()
		err := s.update(func(tx *index.Tx) error {
			st, _, err := tx.ServiceState(backupBinary, zone)
			if err != nil {
				return err
			}
			st.Error = ""
			if perr == nil {
				st.Heartbeat = now()
			} else {
				st.Error = perr.Error()
			}
			return tx.PutServiceState(st)
		})
		if err != nil {
			s.log.Printf("heartbeat of zone %s: %v", zone, err)
		}
	}
}

// zoneState is how service-list shows a zone's backup service from its
// recorded state: down with the probe's error, or when its heartbeat is
// older than service_down_time (the owner's heartbeat stopped or stalls).
func (s *Service) zoneState(st index.Service, url string, at time.Time) (state, reason string) {
	down := cmp.Or(s.cfg.ServiceDownTime, DefaultServiceDownTime)
	s.hb.mu.Lock()
	fresh := s.hb.fresh[st.Zone]
	s.hb.mu.Unlock()
	switch {
	case st.Error != "":
		return "down", st.Error
	case st.Heartbeat.IsZero():
		return "down", "no heartbeat recorded yet"
	case at.Sub(st.Heartbeat) > down:
		return "down", fmt.Sprintf("last heartbeat %s ago, longer than service_down_time %v: the owner's check of its zones (every %v) has stalled; see its log",
			at.Sub(st.Heartbeat).Round(time.Second), down, cmp.Or(s.cfg.ReportInterval, DefaultReportInterval))
	case fresh && !s.zoneUsed(url): // not since that check either
		return "up", "no repository yet: the zone's first backup creates it"
	}
	return "up", ""
}
