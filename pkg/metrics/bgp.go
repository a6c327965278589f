package metrics

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
	"github.com/edgeplane/edgeplane/pkg/metrics/promtext"
)

// BGP family names: route mode's speaker, one series per configured peer, read at scrape time
// from the report the agent keeps (the same report as <run-dir>/bgp.json).
const (
	BGPSessionUp          = "edgeplane_bgp_session_up"
	BGPSessionEstablished = "edgeplane_bgp_session_established_seconds"
	BGPAdvertisedPrefixes = "edgeplane_bgp_advertised_prefixes"
	BGPReceivedPrefixes   = "edgeplane_bgp_received_prefixes"
)

var bgpFamilies = []Family{
	{BGPSessionUp, "gauge", []string{"peer", "peer_asn"}, "Whether the BGP session with each configured peer is established (1/0); no series when the node speaks no BGP."},
	{BGPSessionEstablished, "gauge", []string{"peer"}, "Seconds since the BGP session with the peer was established; 0 while it is down."},
	{BGPAdvertisedPrefixes, "gauge", []string{"peer"}, "IPv4 prefixes this node's BGP speaker sends the peer (pod CIDRs)."},
	{BGPReceivedPrefixes, "gauge", []string{"peer"}, "IPv4 prefixes the peer sent; the speaker keeps them out of its own table."},
}

// bgpCollector reads the speaker's report at scrape time.
type bgpCollector struct {
	up, established, advertised, received *promtext.Desc

	mu     sync.Mutex
	report func() bgpstatus.Report // nil: no speaker wired
}

func newBGPCollector() *bgpCollector {
	return &bgpCollector{
		up: desc(BGPSessionUp), established: desc(BGPSessionEstablished),
		advertised: desc(BGPAdvertisedPrefixes), received: desc(BGPReceivedPrefixes),
	}
}

// SetBGPReport makes the BGP families follow report, the speaker's last report.
func (m *Metrics) SetBGPReport(report func() bgpstatus.Report) {
	m.bgp.mu.Lock()
	defer m.bgp.mu.Unlock()
	m.bgp.report = report
}

func (c *bgpCollector) Collect(s *promtext.Scrape) {
	c.mu.Lock()
	report := c.report
	c.mu.Unlock()
	if report == nil {
		return
	}
	r := report()
	if !r.Speaking {
		return
	}
	now := time.Now()
	for _, p := range r.Peers {
		peer := addrLabel(p.Address)
		up := p.State == bgpstatus.StateEstablished
		s.Add(c.up, boolValue(up), peer, strconv.FormatUint(uint64(p.ASN), 10))
		s.Add(c.established, p.Uptime(now).Seconds(), peer)
		s.Add(c.advertised, float64(p.Advertised), peer)
		s.Add(c.received, float64(p.Received), peer)
	}
}

func addrLabel(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
