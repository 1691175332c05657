package service

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/volback/volback/chunkstore"
	"github.com/volback/volback/drivers/repo"
	"github.com/volback/volback/drivers/volume"
	"github.com/volback/volback/index"
)

// Services as service-list shows them, in Cinder's style: one backup
// service per availability zone (its repository), one row per volume
// driver, and the catalog's owner.
const (
	backupBinary  = "volback-backup"
	volumeBinary  = "volback-volume"
	catalogBinary = "volback-catalog"
	// probeTimeout bounds how long service-list waits for a repository.
	probeTimeout = 5 * time.Second
)

// ServiceView is one row of service-list.
type ServiceView struct {
	Binary         string     `json:"binary"`
	Host           string     `json:"host"`
	Zone           string     `json:"zone"`
	Status         string     `json:"status"` // enabled, disabled
	State          string     `json:"state"`  // up, down
	UpdatedAt      *time.Time `json:"updated_at"`
	DisabledReason *string    `json:"disabled_reason"`
	Repository     *string    `json:"repository"`
	Reason         *string    `json:"reason"` // why it is down
}

// ServiceRequest is service-disable and service-enable.
type ServiceRequest struct {
	Zone   string `json:"zone"`
	Reason string `json:"reason,omitempty"`
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}

// probe checks that zone's repository answers: it opens it without
// creating anything and reads its config.
func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		be, err := repo.Open(ctx, url, false)
		if err == nil {
			_, err = chunkstore.Open(ctx, be)
			be.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("repository %s did not answer within %v", url, probeTimeout)
	}
}

// ListServices lists the services: each zone's backup service as the
// owner's heartbeat last found it (it waits for the owner's first check
// of its zones; an owner without a heartbeat checks them now), the volume
// drivers and the catalog owner.
func (s *Service) ListServices(ctx context.Context) ([]ServiceView, error) {
	if err := s.checkedZones(ctx); err != nil {
		return nil, err
	}
	host := hostname()
	var out []ServiceView
	t := now()
	for _, zone := range s.cfg.ZoneNames() {
		url := s.cfg.Zones[zone].Repository
		var st index.Service
		if err := s.cat.View(func(tx *index.Tx) (err error) { st, _, err = tx.ServiceState(backupBinary, zone); return err }); err != nil {
			return nil, err
		}
		row := ServiceView{Binary: backupBinary, Host: host, Zone: zone, Status: "enabled",
			DisabledReason: nullable(st.DisabledReason), Repository: nullable(url)}
		if st.Disabled {
			row.Status = "disabled"
		}
		if !st.Heartbeat.IsZero() {
			hb := st.Heartbeat
			row.UpdatedAt = &hb
		}
		var reason string
		row.State, reason = s.zoneState(st, url, t)
		row.Reason = nullable(reason)
		out = append(out, row)
	}
	for _, scheme := range volume.Schemes() {
		name, registered := strings.TrimSuffix(scheme, "://"), strings.TrimSuffix(scheme, "://")
		if scheme == "/absolute/path" {
			name, registered = "file", volume.PathScheme // the driver of image files and block devices
		}
		row := ServiceView{Binary: volumeBinary, Host: host + "@" + name, Zone: s.cfg.DefaultZone,
			Status: "enabled", State: "up", UpdatedAt: &t}
		if err := volume.Available(registered); err != nil {
			row.State, row.Reason = "down", nullable(err.Error())
		}
		out = append(out, row)
	}
	out = append(out, ServiceView{Binary: catalogBinary, Host: fmt.Sprintf("%s (pid %d)", host, os.Getpid()), Zone: s.cfg.DefaultZone,
		Status: "enabled", State: "up", UpdatedAt: &t, Repository: nullable(s.cfg.Home)})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Binary < out[j].Binary })
	return out, nil
}

// SetServiceEnabled enables or disables new work for a zone's backup
// service (admins only: see policy.go).
func (s *Service) SetServiceEnabled(ctx context.Context, req ServiceRequest, enabled bool) (*ServiceView, error) {
	if _, ok := s.cfg.Zones[req.Zone]; !ok {
		return nil, errorf(ErrNotFound, "availability zone %q is not configured; configured zones: %v", req.Zone, s.cfg.ZoneNames())
	}
	var st index.Service
	err := s.update(func(tx *index.Tx) (err error) {
		if st, _, err = tx.ServiceState(backupBinary, req.Zone); err != nil {
			return err
		}
		st.Disabled, st.DisabledReason, st.UpdatedAt = !enabled, "", now()
		if !enabled {
			st.DisabledReason = req.Reason
		}
		return tx.PutServiceState(st)
	})
	if err != nil {
		return nil, err
	}
	status := "enabled"
	if !enabled {
		status = "disabled"
	}
	s.event(ctx, "service "+status, "binary", backupBinary, "zone", req.Zone, "reason", req.Reason)
	return &ServiceView{Binary: backupBinary, Host: hostname(), Zone: req.Zone, Status: status, State: "up",
		DisabledReason: nullable(st.DisabledReason), Repository: nullable(s.cfg.Zones[req.Zone].Repository)}, nil
}

// zoneAcceptsWork refuses new work for a zone whose backup service an
// admin disabled (service-disable).
func (s *Service) zoneAcceptsWork(zone string) error {
	var st index.Service
	if err := s.cat.View(func(tx *index.Tx) (err error) { st, _, err = tx.ServiceState(backupBinary, zone); return err }); err != nil {
		return err
	}
	if st.Disabled {
		return errorf(ErrInvalidState, "Service %s in availability zone %s is disabled (%s); no new backups or restores go there until an admin runs 'volback service-enable %s'",
			backupBinary, zone, cmp.Or(st.DisabledReason, "no reason given"), zone)
	}
	return nil
}

// zoneReachable refuses a zone whose repository was used before but does
// not answer now (an NFS export not mounted): opening it with create
// would make a new, empty repository in its place.
func (s *Service) zoneReachable(ctx context.Context, zone string) error {
	url := s.cfg.Zones[zone].Repository
	bound, err := s.zoneBinding(zone)
	if err != nil {
		return err
	}
	if bound.RepositoryID == "" && !s.zoneUsed(url) {
		return nil
	}
	if err := probe(ctx, url); err != nil {
		return fmt.Errorf("the repository of availability zone %q (%s, repository %s) is unreachable (service-list shows it down): %w; volback does not create a new empty repository for a zone that had one: mount the file system that holds it (an NFS export?), or fix the zone's URL in %s",
			zone, url, bound.RepositoryID, err, filepath.Join(s.cfg.Home, ConfigName))
	}
	return nil
}

// unreachable records a backup that could not start because its zone's
// repository does not answer: an `error` backup whose fail_reason says
// why, as Cinder records backups its service could not take. It holds no
// chunk and counts against the quota like any error backup.
func (s *Service) unreachable(ctx context.Context, vol *index.Volume, req BackupRequest, zone string, cause error) error {
	t := now()
	b := &index.Backup{ID: uuid.NewString(), Name: req.Name, Description: req.Description, Status: index.StatusError,
		FailReason: cause.Error(), VolumeID: vol.ID, VolumeName: vol.Name, SizeBytes: vol.Size, AvailabilityZone: zone,
		Container: s.cfg.Zones[zone].Repository, ProjectID: vol.ProjectID, CreatedAt: t, UpdatedAt: t, DataTimestamp: t}
	err := s.update(func(tx *index.Tx) error {
		if err := reserveBackup(tx, b.ProjectID, b.SizeBytes); err != nil {
			return err
		}
		return tx.PutBackup(b)
	})
	if err != nil {
		return err
	}
	s.event(ctx, "backup error", "backup", b.ID, "volume", vol.ID, "project", b.ProjectID, "zone", zone, "reason", b.FailReason)
	return fmt.Errorf("backup %s of volume %s failed: %w", b.ID, vol.Name, cause)
}

// zoneUsed reports whether a backup was ever written to the repository at
// url (the catalog knows a backup there).
func (s *Service) zoneUsed(url string) bool {
	used := false
	s.cat.View(func(tx *index.Tx) error {
		all, err := tx.Backups()
		for _, b := range all {
			used = used || (b.Container == url && b.RepositoryID != "")
		}
		return err
	})
	return used
}
