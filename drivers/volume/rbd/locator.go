package rbd

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultTimeout bounds one cluster operation when the locator sets none.
const DefaultTimeout = 30 * time.Second

// Locator is a parsed rbd:// locator.
type Locator struct {
	Pool      string
	Namespace string
	Image     string
	Snapshot  string // "" for the image itself
	Conf      string // as given; "" means the default (see ConfPath)
	User      string // as given, without "client."; "" means admin
	Timeout   time.Duration
	timeout   string // as given, kept for String
}

// ParseLocator parses rbd://POOL/IMAGE[@SNAPSHOT][?conf=…&user=…&namespace=…&timeout=…].
func ParseLocator(s string) (Locator, error) {
	bad := func(why string) error {
		return fmt.Errorf("volume %q: %s; use rbd://POOL/IMAGE[@SNAPSHOT][?conf=PATH&user=ID&namespace=NS&timeout=30s]", s, why)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Locator{}, bad(err.Error())
	}
	if u.Scheme != Scheme || u.Opaque != "" || u.User != nil || u.Fragment != "" {
		return Locator{}, bad("not an rbd:// locator")
	}
	l := Locator{Pool: u.Host, Timeout: DefaultTimeout}
	path := strings.TrimPrefix(u.Path, "/")
	if l.Pool == "" || path == "" {
		return Locator{}, bad("it names no pool or no image")
	}
	if strings.Contains(path, "/") {
		return Locator{}, bad("the image name contains '/' (an RBD namespace goes in ?namespace=NS)")
	}
	l.Image, l.Snapshot, _ = strings.Cut(path, "@")
	if l.Image == "" || (strings.Contains(path, "@") && l.Snapshot == "") {
		return Locator{}, bad("empty image or snapshot name")
	}
	for k, v := range u.Query() {
		val := v[len(v)-1]
		switch k {
		case "conf":
			l.Conf = val
		case "user":
			l.User = strings.TrimPrefix(val, "client.")
		case "namespace":
			l.Namespace = val
		case "timeout":
			d, err := time.ParseDuration(val)
			if err != nil || d < time.Second {
				return Locator{}, bad(fmt.Sprintf("timeout=%q is not a duration of at least 1s", val))
			}
			l.Timeout, l.timeout = d, val
		default:
			return Locator{}, bad(fmt.Sprintf("unknown parameter %q (rbd:// knows conf, user, namespace, timeout)", k))
		}
	}
	return l, nil
}

// String is the canonical locator: the parameters given, in a fixed order.
func (l Locator) String() string {
	path := url.PathEscape(l.Image)
	if l.Snapshot != "" {
		path += "@" + url.PathEscape(l.Snapshot)
	}
	q := url.Values{}
	for k, v := range map[string]string{"conf": l.Conf, "user": l.User, "namespace": l.Namespace, "timeout": l.timeout} {
		if v != "" {
			q.Set(k, v)
		}
	}
	s := Scheme + "://" + l.Pool + "/" + path
	if len(q) > 0 {
		s += "?" + q.Encode() // Encode sorts by key
	}
	return s
}

// At is the locator of the image's snapshot name.
func (l Locator) At(snapshot string) Locator {
	l.Snapshot = snapshot
	return l
}

// ConfPath is the ceph.conf to read: conf=, else $CEPH_CONF, else
// /etc/ceph/ceph.conf.
func (l Locator) ConfPath() string {
	if l.Conf != "" {
		return l.Conf
	}
	if c := os.Getenv("CEPH_CONF"); c != "" {
		return c
	}
	return "/etc/ceph/ceph.conf"
}

// UserID is the client id to connect as.
func (l Locator) UserID() string {
	if l.User != "" {
		return l.User
	}
	return "admin"
}

// Spec is the image as the rbd tool names it: POOL/[NS/]IMAGE[@SNAP].
func (l Locator) Spec() string {
	s := l.Pool + "/"
	if l.Namespace != "" {
		s += l.Namespace + "/"
	}
	s += l.Image
	if l.Snapshot != "" {
		s += "@" + l.Snapshot
	}
	return s
}

// ImagePrefix starts the names of the images volback creates in a zone's
// pool: volume-<id>, as Cinder names them.
const ImagePrefix = "volume-"

// place is the locator of the new image volume-<id> in the pool that
// location (rbd://POOL[?conf=…&user=…&namespace=…&timeout=…]) names.
func place(location, id string) (string, error) {
	u, err := url.Parse(location)
	if err != nil || u.Scheme != Scheme || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("volume location %q: use rbd://POOL[?conf=PATH&user=ID&namespace=NS] (new images are created in POOL)", location)
	}
	l, err := ParseLocator(Scheme + "://" + u.Host + "/" + ImagePrefix + id + "?" + u.RawQuery)
	if err != nil {
		return "", fmt.Errorf("volume location %q: %v", location, err)
	}
	return l.String(), nil
}
