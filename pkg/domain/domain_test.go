package domain

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

const example = `
poolLabel: apps.openyurt.io/nodepool
defaultConnectivity: public
domains:
  cloud: [cloud-hz, cloud-sh]
connectivity:
- domains: [cloud, site-a]
  mode: private
`

func TestParseExample(t *testing.T) {
	m, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{nil, Default},
		{map[string]string{DefaultPoolLabel: "cloud-hz"}, "cloud"},
		{map[string]string{DefaultPoolLabel: "cloud-sh"}, "cloud"},
		{map[string]string{DefaultPoolLabel: "site-a"}, "site-a"},
		{map[string]string{DefaultPoolLabel: "site-b"}, "site-b"},
		{map[string]string{"other/label": "cloud-hz"}, Default},
	} {
		if got := m.DomainOf(labels.Set(tc.labels)); got != tc.want {
			t.Errorf("DomainOf(%v) = %q, want %q", tc.labels, got, tc.want)
		}
	}
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"cloud", "cloud", true},
		{"cloud", "site-a", true},
		{"site-a", "cloud", true},
		{"cloud", "site-b", false},
		{"site-a", "site-b", false},
		{Default, "cloud", false},
		{Default, Default, true},
	} {
		if got := m.Reachable(tc.a, tc.b); got != tc.want {
			t.Errorf("Reachable(%s, %s) = %t, want %t", tc.a, tc.b, got, tc.want)
		}
	}
	if got := m.Configured(); strings.Join(got, ",") != "cloud,site-a" {
		t.Errorf("Configured = %v", got)
	}
}

func TestDefaultModel(t *testing.T) {
	m := DefaultModel()
	if m.PoolLabel() != DefaultPoolLabel || m.DefaultConnectivity() != Public {
		t.Fatalf("defaults: %q %q", m.PoolLabel(), m.DefaultConnectivity())
	}
	if m.Reachable("a", "b") || !m.Reachable("a", "a") {
		t.Fatal("default model: distinct pools must be public, a pool reaches itself")
	}
	// An empty ConfigMap key is the default model too.
	e, err := Parse(nil)
	if err != nil || !e.Equal(m) {
		t.Fatalf("Parse(nil) = %v, %v", e, err)
	}
}

func TestPrivateDefault(t *testing.T) {
	m, err := Parse([]byte("defaultConnectivity: private\nconnectivity:\n- domains: [site-b, cloud]\n  mode: public\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Reachable("cloud", "site-a") || m.Reachable("cloud", "site-b") || m.Reachable("site-b", "cloud") {
		t.Fatal("private default with one public pair")
	}
}

func TestCustomPoolLabel(t *testing.T) {
	m, err := Parse([]byte("poolLabel: alibabacloud.com/nodepool-id\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.DomainOf(labels.Set(map[string]string{"alibabacloud.com/nodepool-id": "np-1", DefaultPoolLabel: "x"})); got != "np-1" {
		t.Fatalf("DomainOf = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown field":    {"defaultConectivity: private\n", "unknown field"},
		"bad mode":         {"defaultConnectivity: vpn\n", `connectivity "vpn"`},
		"bad link mode":    {"connectivity:\n- domains: [a, b]\n  mode: fast\n", `connectivity[0]: connectivity "fast"`},
		"one domain":       {"connectivity:\n- domains: [a]\n  mode: private\n", "two different domains"},
		"same domain":      {"connectivity:\n- domains: [a, a]\n  mode: private\n", "two different domains"},
		"conflicting pair": {"connectivity:\n- domains: [a, b]\n  mode: private\n- domains: [b, a]\n  mode: public\n", "both private and public"},
		"pool in two":      {"domains:\n  x: [p]\n  z: [p]\n", `pool "p" is in both x and z`},
		"bad pool":         {"domains:\n  x: ['no spaces']\n", "not a label value"},
		"bad domain name":  {"domains:\n  'a b': [p]\n", "not a label value"},
		"long domain name": {"connectivity:\n- domains: [a, " + strings.Repeat("x", 64) + "]\n  mode: private\n", "not a label value"},
		"bad pool label":   {"poolLabel: 'a b'\n", "poolLabel"},
		"not yaml":         {"{", ConfigKey},
		"several at once":  {"defaultConnectivity: vpn\ndomains:\n  x: [p]\n  z: [p]\n", "is in both"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestIDs(t *testing.T) {
	if ID(Default) != 0 || ID("") != 0 {
		t.Fatal("the default domain must be ID 0 (routes written before domains existed carry 0)")
	}
	if ID("cloud") == 0 || ID("cloud") == ID("site-a") {
		t.Fatal("named domains get distinct non-zero IDs")
	}
	if err := CheckIDs([]string{"cloud", "site-a", "cloud"}); err != nil {
		t.Fatal(err)
	}
}

func TestGateway(t *testing.T) {
	if !IsGateway(labels.Set(map[string]string{CloudGatewayLabel: ""})) || IsGateway(labels.Set(nil)) {
		t.Fatal("IsGateway")
	}
}

func TestEqual(t *testing.T) {
	a, _ := Parse([]byte(example))
	b, _ := Parse([]byte(example))
	c, _ := Parse([]byte("defaultConnectivity: private\n"))
	if !a.Equal(b) || a.Equal(c) || a.Equal(nil) {
		t.Fatal("Equal")
	}
}
