package lab

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

// The parsers of birdc's output, on output recorded from BIRD 2.0.12 in TestRouteSite's setup (a1
// on segment 1, a2 on segment 2, then a2's speaker stopped).
func TestParseBird(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	routes := parseBirdRoutes(read("birdc-show-route-all-primary.txt"))
	want := map[netip.Prefix]GatewayRoute{
		netip.MustParsePrefix("10.244.1.0/24"): {netip.MustParsePrefix("10.244.1.0/24"), netip.MustParseAddr("172.31.0.11"), "seg1_1"},
		netip.MustParsePrefix("10.244.2.0/24"): {netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddr("172.31.1.12"), "seg2_1"},
	}
	if len(routes) != len(want) {
		t.Errorf("routes: %v, want %v", routes, want)
	}
	for p, r := range want {
		if routes[p] != r {
			t.Errorf("route %s: %+v, want %+v", p, routes[p], r)
		}
	}

	sessions := parseBirdSessions(read("birdc-show-protocols-all.txt"), isSpawned)
	if len(sessions) != 2 {
		t.Errorf("sessions: %+v, want the two spawned ones (not the segment listeners)", sessions)
	}
	for addr, name := range map[string]string{"172.31.0.11": "seg1_1", "172.31.1.12": "seg2_1"} {
		s := sessions[netip.MustParseAddr(addr)]
		if s.Name != name || s.State != "up" || s.BGPState != "Established" || s.Imported != 1 || s.NeighborRestartTime != "" || s.GracefulRestartActive {
			t.Errorf("session with %s: %+v, want %s up, Established, 1 imported, no restart time announced (the stand-in speaker has graceful restart off)", addr, s, name)
		}
	}

	down := parseBirdSessions(read("birdc-show-protocols-all-down.txt"), isSpawned)
	if s := down[netip.MustParseAddr("172.31.1.12")]; s.State != "start" || s.BGPState != "Active" {
		t.Errorf("session with the stopped speaker: %+v, want start/Active", s)
	}
}

func isSpawned(name string) bool { return strings.HasPrefix(name, "seg") }
