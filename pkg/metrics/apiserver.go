package metrics

import (
	"sync"

	"github.com/edgeplane/edgeplane/pkg/metrics/promtext"
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
	reachable, outages, last, since *promtext.Desc

	mu     sync.Mutex
	status func() APIServerStatus // nil: no monitor (no series)
}

func newAPIServerCollector() *apiserverCollector {
	return &apiserverCollector{
		reachable: desc(APIServerReachable), outages: desc(APIServerOutages),
		last: desc(APIServerLastOutage), since: desc(APIServerStateChange),
	}
}

// SetAPIServerStatus makes the reachability families follow status.
func (m *Metrics) SetAPIServerStatus(status func() APIServerStatus) {
	m.apiserver.mu.Lock()
	defer m.apiserver.mu.Unlock()
	m.apiserver.status = status
}

func (c *apiserverCollector) Collect(s *promtext.Scrape) {
	c.mu.Lock()
	status := c.status
	c.mu.Unlock()
	if status == nil {
		return
	}
	st := status()
	s.Add(c.reachable, boolValue(st.Reachable))
	s.Add(c.outages, float64(st.Outages))
	s.Add(c.last, st.LastOutageSecs)
	s.Add(c.since, st.StateSinceUnix)
}
