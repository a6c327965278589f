package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// API server reachability families (docs/autonomy.md): read at scrape time from the agent's
// monitor (k8s.Reachability), so they say what the agent knows at that moment.
const (
	APIServerReachable   = "edgeplane_apiserver_reachable"
	APIServerOutages     = "edgeplane_apiserver_outages_total"
	APIServerLastOutage  = "edgeplane_apiserver_last_outage_seconds"
	APIServerStateChange = "edgeplane_apiserver_state_since_seconds"
)

var apiserverFamilies = []Family{
	{APIServerReachable, "gauge", nil, "Whether the API server answers this agent's probes (1/0); 0 from the second failed probe in a row (an outage) until the next answer. The datapath keeps forwarding on the last state either way."},
	{APIServerOutages, "counter", nil, "Outages of the API server seen by this agent that have ended (the agent was cut off, then reached it again)."},
	{APIServerLastOutage, "gauge", nil, "Duration of the last outage that ended, from the first failed probe to the first answer after it; 0 before any."},
	{APIServerStateChange, "gauge", nil, "Unix time at which the current reachability state began: the start of the outage in progress, or the end of the last one (the agent's start before any)."},
}

// APIServerStatus is what the reachability families report.
type APIServerStatus struct {
	Reachable      bool
	Outages        int
	LastOutageSecs float64
	StateSinceUnix float64
}

type apiserverCollector struct {
	reachable, outages, last, since *prometheus.Desc

	mu     sync.Mutex
	status func() APIServerStatus // nil: no monitor (no series)
}

func newAPIServerCollector() *apiserverCollector {
	return &apiserverCollector{
		reachable: prometheus.NewDesc(APIServerReachable, help(APIServerReachable), nil, nil),
		outages:   prometheus.NewDesc(APIServerOutages, help(APIServerOutages), nil, nil),
		last:      prometheus.NewDesc(APIServerLastOutage, help(APIServerLastOutage), nil, nil),
		since:     prometheus.NewDesc(APIServerStateChange, help(APIServerStateChange), nil, nil),
	}
}

// SetAPIServerStatus makes the reachability families follow status.
func (m *Metrics) SetAPIServerStatus(status func() APIServerStatus) {
	m.apiserver.mu.Lock()
	defer m.apiserver.mu.Unlock()
	m.apiserver.status = status
}

func (c *apiserverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.reachable
	ch <- c.outages
	ch <- c.last
	ch <- c.since
}

func (c *apiserverCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	status := c.status
	c.mu.Unlock()
	if status == nil {
		return
	}
	s := status()
	up := 0.0
	if s.Reachable {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.reachable, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(c.outages, prometheus.CounterValue, float64(s.Outages))
	ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, s.LastOutageSecs)
	ch <- prometheus.MustNewConstMetric(c.since, prometheus.GaugeValue, s.StateSinceUnix)
}
