package agent

import (
	"context"
	"time"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// ReasonOverlappingNetworks is the reason of the Warning event recorded on this node's Node when
// start-up refuses overlapping cluster, service and node networks.
const ReasonOverlappingNetworks = "OverlappingNetworks"

// warnNode records a Warning event on node before the agent exits with err. It writes the event
// itself, synchronously, rather than through an event recorder, whose asynchronous sink could
// lose it when the process exits right after. Failing to record it is only logged.
func (a *Agent) warnNode(ctx context.Context, node *k8s.Node, reason string, err error) {
	logger := klog.FromContext(ctx)
	now := time.Now()
	ev := k8s.NewEvent(node.Ref(), api.EventSource{Component: "edgeplane-agent", Host: a.cfg.NodeName},
		api.EventTypeWarning, reason, "edgeplane-agent cannot start: "+err.Error(), now, now.UnixNano())
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, cerr := a.client.CreateEvent(ctx, ev); cerr != nil {
		logger.Error(cerr, "Recording the start-up failure as an event", "node", node.Name, "reason", reason)
	}
}
