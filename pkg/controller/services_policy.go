package controller

import (
	"context"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// What the ServiceReconciler remembers of each Service between reconciles: the last valid value
// of its OpenYurt annotations, and the problems already reported as events.

// policyLocked reads the Service's OpenYurt annotations. One that does not parse is reported and
// replaced by its last valid value; a Service that never had one gets the safe default: no
// topology (as OpenYurt reads an unknown key), and node ports closed on every node in a pool (the
// annotation exists to restrict where a node port is open: an error must not open it wider). At
// start-up, the previous agent's decision for this node, read from its pinned node port
// frontends, is the last valid value.
func (r *ServiceReconciler) policyLocked(key string, svc *api.Service, events *eventSet) service.Policy {
	st := r.stateLocked(key)
	valid := st.policy
	var p service.Policy
	var err error
	if p.Topology, err = service.TopologyOf(svc); err == nil {
		valid.topology, valid.hasTopology = p.Topology, true
	} else {
		keep := "no topology (every endpoint)"
		if valid.hasTopology {
			p.Topology, keep = valid.topology, fmt.Sprintf("the last valid topology (%s)", valid.topology)
		}
		events.add(ReasonInvalidServiceAnnotation, fmt.Sprintf("%v; edgeplane applies %s", err, keep))
	}
	if p.Listen, err = service.ListenOf(svc); err == nil {
		valid.listen, valid.hasListen = p.Listen, true
	} else if hasNodePorts(svc) {
		keep := "node ports closed on nodes in a pool"
		if valid.hasListen {
			p.Listen, keep = valid.listen, fmt.Sprintf("the last valid value (%q)", valid.listen.String())
		} else if pinned, found := r.pinnedListenLocked(svc); found {
			p.Listen, keep = pinned, "this node's previous decision"
		}
		events.add(ReasonInvalidServiceAnnotation, fmt.Sprintf("%v; edgeplane applies %s", err, keep))
	}
	st.policy = valid
	return p
}

// validPolicy is the last valid value of each annotation of a Service (has*: one was seen). Held
// by value: 10,000 Services would otherwise cost two small allocations each.
type validPolicy struct {
	topology    service.Topology
	listen      service.Listen
	hasTopology bool
	hasListen   bool
}

// seen reports whether either annotation was ever valid.
func (v validPolicy) seen() bool { return v.hasTopology || v.hasListen }

func hasNodePorts(svc *api.Service) bool {
	return svc.Spec.Type == api.ServiceTypeNodePort || svc.Spec.Type == api.ServiceTypeLoadBalancer
}

// eventSet collects one reconcile's findings about a Service.
type eventSet [][2]string

func (e *eventSet) add(reason, message string) { *e = append(*e, [2]string{reason, message}) }

// recordLocked records each finding as a Warning event on the Service, once: a finding the
// previous reconcile reported already is not repeated; one that went away is reported again when
// it comes back.
func (r *ServiceReconciler) recordLocked(ctx context.Context, key string, svc *api.Service, events eventSet) {
	var prev map[string]bool
	if st := r.states[key]; st != nil {
		prev = st.reported
	}
	cur := map[string]bool{}
	for _, e := range events {
		id := e[0] + "\x00" + e[1]
		cur[id] = true
		if prev[id] {
			continue
		}
		klog.FromContext(ctx).Info("Service problem", "service", key, "reason", e[0], "message", e[1])
		if r.cfg.Recorder != nil {
			r.cfg.Recorder.Event(svc, api.EventTypeWarning, e[0], e[1])
		}
	}
	if len(cur) == 0 {
		if st := r.states[key]; st != nil {
			st.reported = nil
			r.dropStateLocked(key)
		}
		return
	}
	r.stateLocked(key).reported = cur
}
