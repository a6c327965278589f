package metrics

import (
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
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
	up, established, advertised, received *prometheus.Desc

	mu     sync.Mutex
	report func() bgpstatus.Report // nil: no speaker wired
}

func newBGPCollector() *bgpCollector {
	return &bgpCollector{
		up:          prometheus.NewDesc(BGPSessionUp, help(BGPSessionUp), []string{"peer", "peer_asn"}, nil),
		established: prometheus.NewDesc(BGPSessionEstablished, help(BGPSessionEstablished), []string{"peer"}, nil),
		advertised:  prometheus.NewDesc(BGPAdvertisedPrefixes, help(BGPAdvertisedPrefixes), []string{"peer"}, nil),
		received:    prometheus.NewDesc(BGPReceivedPrefixes, help(BGPReceivedPrefixes), []string{"peer"}, nil),
	}
}

// SetBGPReport makes the BGP families follow report, the speaker's last report.
func (m *Metrics) SetBGPReport(report func() bgpstatus.Report) {
	m.bgp.mu.Lock()
	defer m.bgp.mu.Unlock()
	m.bgp.report = report
}

func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.established
	ch <- c.advertised
	ch <- c.received
}

func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
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
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolValue(up), peer, strconv.FormatUint(uint64(p.ASN), 10))
		ch <- prometheus.MustNewConstMetric(c.established, prometheus.GaugeValue, p.Uptime(now).Seconds(), peer)
		ch <- prometheus.MustNewConstMetric(c.advertised, prometheus.GaugeValue, float64(p.Advertised), peer)
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.GaugeValue, float64(p.Received), peer)
	}
}

func addrLabel(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
