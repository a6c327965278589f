package metrics

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

func TestBGPFamiliesFollowTheReport(t *testing.T) {
	m := New("", nil)
	report := bgpstatus.Report{Speaking: true, Peers: []bgpstatus.PeerStatus{
		{Address: netip.MustParseAddr("192.0.2.1"), ASN: 64512, State: bgpstatus.StateEstablished,
			Since: time.Now().Add(-time.Minute), Advertised: 3, Received: 1},
		{Address: netip.MustParseAddr("192.0.2.2"), ASN: 64513, State: bgpstatus.StateActive},
	}}
	m.SetBGPReport(func() bgpstatus.Report { return report })
	want := `
# HELP edgeplane_bgp_session_up ` + help(BGPSessionUp) + `
# TYPE edgeplane_bgp_session_up gauge
edgeplane_bgp_session_up{peer="192.0.2.1",peer_asn="64512"} 1
edgeplane_bgp_session_up{peer="192.0.2.2",peer_asn="64513"} 0
# HELP edgeplane_bgp_advertised_prefixes ` + help(BGPAdvertisedPrefixes) + `
# TYPE edgeplane_bgp_advertised_prefixes gauge
edgeplane_bgp_advertised_prefixes{peer="192.0.2.1"} 3
edgeplane_bgp_advertised_prefixes{peer="192.0.2.2"} 0
# HELP edgeplane_bgp_received_prefixes ` + help(BGPReceivedPrefixes) + `
# TYPE edgeplane_bgp_received_prefixes gauge
edgeplane_bgp_received_prefixes{peer="192.0.2.1"} 1
edgeplane_bgp_received_prefixes{peer="192.0.2.2"} 0
`
	if err := testutil.GatherAndCompare(gatherer(m.Registry()), strings.NewReader(want),
		BGPSessionUp, BGPAdvertisedPrefixes, BGPReceivedPrefixes); err != nil {
		t.Error(err)
	}
	up, err := testutil.GatherAndCount(gatherer(m.Registry()), BGPSessionEstablished)
	if err != nil || up != 2 {
		t.Fatalf("%s: %d series, %v; want 2", BGPSessionEstablished, up, err)
	}
	mfs, _ := gatherer(m.Registry()).Gather()
	for _, mf := range mfs {
		if mf.GetName() != BGPSessionEstablished {
			continue
		}
		for _, s := range mf.GetMetric() {
			v := s.GetGauge().GetValue()
			switch s.GetLabel()[0].GetValue() {
			case "192.0.2.1":
				if v < 59 || v > 120 {
					t.Errorf("established seconds of the up session: %v, want about 60", v)
				}
			case "192.0.2.2":
				if v != 0 {
					t.Errorf("established seconds of the down session: %v, want 0", v)
				}
			}
		}
	}

	report.Speaking = false // the node stopped speaking: its series go
	if n, _ := testutil.GatherAndCount(gatherer(m.Registry()), BGPSessionUp); n != 0 {
		t.Errorf("%d %s series from a node that does not speak", n, BGPSessionUp)
	}
}
