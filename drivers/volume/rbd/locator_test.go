package rbd

import (
	"strings"
	"testing"
	"time"
)

func TestParseLocator(t *testing.T) {
	for _, c := range []struct {
		in, canonical, spec string
		timeout             time.Duration
	}{
		{"rbd://pool/img", "rbd://pool/img", "pool/img", DefaultTimeout},
		{"rbd://pool/img@volback.1", "rbd://pool/img@volback.1", "pool/img@volback.1", DefaultTimeout},
		{"rbd://p/i?user=client.bk&conf=/etc/c.conf&namespace=ns&timeout=5s", "rbd://p/i?conf=%2Fetc%2Fc.conf&namespace=ns&timeout=5s&user=bk", "p/ns/i", 5 * time.Second},
	} {
		l, err := ParseLocator(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if l.String() != c.canonical || l.Spec() != c.spec || l.Timeout != c.timeout {
			t.Errorf("%s: canonical %s spec %s timeout %v; want %s %s %v", c.in, l, l.Spec(), l.Timeout, c.canonical, c.spec, c.timeout)
		}
		again, err := ParseLocator(l.String())
		if err != nil || again != l {
			t.Errorf("%s: the canonical form does not parse back to the same locator: %+v, %v", c.in, again, err)
		}
	}
	for _, bad := range []string{"rbd://pool", "rbd://pool/", "rbd:///img", "rbd://pool/ns/img", "rbd://pool/img@", "rbd://pool/@s",
		"rbd://pool/img?size=1", "rbd://pool/img?timeout=1ms", "file:///x", "rbd://pool/img#frag"} {
		if _, err := ParseLocator(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "rbd://POOL/IMAGE") {
			t.Errorf("%s: %v; want a refusal naming it and the locator form", bad, err)
		}
	}
}

func TestPlace(t *testing.T) {
	got, err := place("rbd://vols?conf=/c.conf&namespace=site1", "0d9e")
	if err != nil || got != "rbd://vols/volume-0d9e?conf=%2Fc.conf&namespace=site1" {
		t.Fatalf("place = %q, %v", got, err)
	}
	for _, bad := range []string{"rbd://vols/img", "rbd:///", "rbd://vols?size=1", "/srv"} {
		if _, err := place(bad, "0d9e"); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("place in %q: %v; want a refusal naming it", bad, err)
		}
	}
}
