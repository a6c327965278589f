package controller

import (
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// frontendMap keys IPv4 frontends in 8 bytes and any other as it is, and gives every key back.
func TestFrontendMap(t *testing.T) {
	m := newFrontendMap()
	keys := []service.FrontendKey{
		{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: service.ProtoUDP, Scope: service.ScopeExternal},
		{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: service.ProtoTCP},
		{VIP: netip.IPv4Unspecified(), Port: 30080, Proto: service.ProtoTCP},
		{VIP: netip.MustParseAddr("fd00::10"), Port: 53, Proto: service.ProtoUDP}, // none today; kept exact
	}
	for i, k := range keys {
		m.set(k, &programmed{owner: k.String(), entry: ServiceEntry{ID: uint32(i + 1)}})
	}
	if m.len() != len(keys) || len(m.v4) != 3 || len(m.other) != 1 {
		t.Fatalf("len %d (v4 %d, other %d); want %d", m.len(), len(m.v4), len(m.other), len(keys))
	}
	seen := map[service.FrontendKey]bool{}
	for k, p := range m.all() {
		if p.owner != k.String() || m.get(k) != p {
			t.Errorf("%s: got %+v", k, p)
		}
		seen[k] = true
		m.remove(k) // allowed while walking
	}
	if len(seen) != len(keys) || m.len() != 0 {
		t.Errorf("walked %v, %d left", seen, m.len())
	}
	if p := m.get(keys[0]); p != nil {
		t.Errorf("removed frontend still there: %+v", p)
	}
}
