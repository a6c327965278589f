package controller

import (
	"strings"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// Problems of cluster-wide objects (a Service's annotation, the domain ConfigMap, another node's
// network annotations) are seen by every agent alike; each logs them, but only one records them as
// events: the agent wires a recorder that passes events only while it holds the reporter Lease
// (k8s.WhileHeld). When an agent takes the Lease, the events the previous reporter recorded may
// never have been written (it died), so ReportAgain records the problems still present once more.
// A node's own problems (CloudGatewayIsolated, its health check port) its own agent records.

// ReportAgain records, once more, a Warning event for every Service finding of the last reconciles.
func (r *ServiceReconciler) ReportAgain() {
	if r.cfg.Recorder == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, st := range r.states {
		findings := st.reported
		if findings == nil {
			continue
		}
		obj, exists, err := r.services.GetByKey(key)
		svc := k8s.ServiceObject(obj)
		if err != nil || !exists || svc == nil {
			continue
		}
		for f := range findings {
			reason, message, _ := strings.Cut(f, "\x00")
			r.cfg.Recorder.Event(svc, api.EventTypeWarning, reason, message)
		}
	}
}

// ReportAgain records, once more, a Warning event for every node whose network configuration is
// being ignored.
func (r *NodeReconciler) ReportAgain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, msg := range r.errs {
		if node, err := r.lister.Get(name); err == nil {
			r.recordInvalidLocked(node, msg)
		}
	}
}

func (r *NodeReconciler) recordInvalidLocked(node *k8s.Node, msg string) {
	recorder := r.cfg.ClusterRecorder
	if recorder == nil {
		recorder = r.cfg.Recorder
	}
	if recorder != nil {
		recorder.Eventf(node.Ref(), api.EventTypeWarning, ReasonInvalidNetworkConfig,
			"edgeplane ignores this node's network configuration and keeps its last good state: %s", msg)
	}
}
