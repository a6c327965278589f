package agent

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/metrics"
)

// The agent cut off from the API server (docs/autonomy.md): nothing here changes what the
// datapath does during an outage (it forwards on the last state the maps hold, and the informers'
// caches keep theirs, so no reconciler deletes anything for want of the API server); this file
// says what happened: the reachability metrics, a line of /readyz, and an event on the Node when
// the link returns.

// ReasonAPIServerReconnected is the reason of the Normal event recorded on this node's Node at the
// end of each outage of the API server, with its duration.
const ReasonAPIServerReconnected = "APIServerReconnected"

// followAPIServer exports the monitor's state as metrics and as a note of /readyz.
func (a *Agent) followAPIServer() {
	if a.apiserver == nil {
		return
	}
	a.telemetry.metrics.SetAPIServerStatus(func() metrics.APIServerStatus {
		s := a.apiserver.Status()
		return metrics.APIServerStatus{Reachable: s.Reachable, Outages: s.Outages,
			LastOutageSecs: s.Last.Duration().Seconds(), StateSinceUnix: float64(s.Since.UnixNano()) / 1e9}
	})
	a.ready.addNote(func() string { return apiserverNote(a.apiserver.Status(), time.Now()) })
}

// apiserverNote is /readyz's line about the API server.
func apiserverNote(s k8s.ReachabilityStatus, now time.Time) string {
	if !s.Reachable {
		return fmt.Sprintf("apiserver: unreachable since %s (%s); the datapath forwards on the last state it was given: %v",
			s.Since.UTC().Format(time.RFC3339), now.Sub(s.Since).Round(time.Second), s.Err)
	}
	if s.Outages == 0 {
		return "apiserver: reachable"
	}
	return fmt.Sprintf("apiserver: reachable; %d outage(s), the last %s from %s to %s", s.Outages,
		s.Last.Duration().Round(time.Millisecond), s.Last.Start.UTC().Format(time.RFC3339), s.Last.End.UTC().Format(time.RFC3339))
}

// reportReconnections records an event on this node's Node for every outage that ended, those
// before watch started included (an agent started during a partition), until ctx is done.
func (a *Agent) reportReconnections(ctx context.Context, recorder k8s.EventRecorder) {
	if a.apiserver == nil {
		return
	}
	ended := make(chan struct{}, 1)
	a.apiserver.OnReconnect(func(k8s.Outage) {
		select {
		case ended <- struct{}{}:
		default:
		}
	})
	ref := &api.ObjectReference{Kind: "Node", Name: a.cfg.NodeName, UID: types.UID(a.cfg.NodeName)}
	for {
		for _, o := range a.apiserver.TakeEnded() {
			recorder.Eventf(ref, api.EventTypeNormal, ReasonAPIServerReconnected,
				"API server unreachable for %s (%s to %s); the datapath kept forwarding on the last state and the agent resynced",
				o.Duration().Round(time.Millisecond), o.Start.UTC().Format(time.RFC3339), o.End.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return
		case <-ended:
		}
	}
}
