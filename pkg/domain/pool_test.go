package domain

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

// An empty pool label value means "no pool", exactly as a missing label (docs/domains.md): the
// node is in the default domain, which the configuration may name like any other.
func TestEmptyPoolLabelIsNoPool(t *testing.T) {
	m, err := Parse([]byte("connectivity:\n- domains: [default, cloud]\n  mode: private\n"))
	if err != nil {
		t.Fatal(err)
	}
	empty, missing := map[string]string{DefaultPoolLabel: ""}, map[string]string(nil)
	if pool, ok := m.PoolOf(labels.Set(empty)); ok || pool != "" {
		t.Errorf("PoolOf(empty value) = %q, %t; want no pool", pool, ok)
	}
	if got, want := m.DomainOf(labels.Set(empty)), m.DomainOf(labels.Set(missing)); got != Default || got != want {
		t.Errorf("DomainOf(empty value) = %q, no label %q; want both %q", got, want, Default)
	}
	if !m.Reachable(m.DomainOf(labels.Set(empty)), "cloud") || m.Reachable(m.DomainOf(labels.Set(empty)), "site-b") {
		t.Error("a node with an empty pool value does not follow the default domain's connectivity")
	}
	if ID(m.DomainOf(labels.Set(empty))) != ID(Default) {
		t.Errorf("domain ID %#x, want the default domain's %#x", ID(m.DomainOf(labels.Set(empty))), ID(Default))
	}
}
