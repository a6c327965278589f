package maptables

import (
	"net/netip"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

func TestLBAdapters(t *testing.T) {
	k := service.FrontendKey{VIP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: service.ProtoUDP, Scope: service.ScopeExternal}
	key, err := svcKey(k)
	if err != nil || frontendKey(key) != k || key.Port != (lb.Port{0, 53}) {
		t.Errorf("svcKey %v %v", key, err)
	}
	if _, err := svcKey(service.FrontendKey{VIP: netip.MustParseAddr("fd00::1")}); err == nil {
		t.Error("an IPv6 frontend converted")
	}
	b := service.Backend{IP: netip.MustParseAddr("10.244.1.5"), Port: 8080}
	v, err := lbBackend(b)
	if err != nil || BackendOf(v.IP, v.Port) != b {
		t.Errorf("lbBackend %v %v", v, err)
	}
}
