package service

import (
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// HealthCheck is what a Service's health check node port (spec.healthCheckNodePort) reports on
// this node: cloud load balancers probe it to send externalTrafficPolicy: Local traffic only to
// nodes that keep it.
type HealthCheck struct {
	// Port is spec.healthCheckNodePort of a NodePort or LoadBalancer Service with
	// externalTrafficPolicy: Local; 0: the Service needs no health check port.
	Port uint16
	// LocalEndpoints counts this node's ready endpoints by address, as kube-proxy does (an
	// endpoint behind two ports counts once). Terminating endpoints do not count, even while the
	// datapath still falls back to them: the load balancer must drain the node. It is 0 where
	// NodePort isolation closes the Service's node ports here: the node would drop what the load
	// balancer sends.
	LocalEndpoints int
}

// HealthCheckOf computes the Service's health check on this node from the same input as
// Frontends.
func HealthCheckOf(in Input) HealthCheck {
	svc := in.Service
	if _, ignored := Ignored(svc); ignored || svc.Spec.ExternalTrafficPolicy != api.ServiceExternalTrafficPolicyLocal {
		return HealthCheck{}
	}
	hasNodePorts := svc.Spec.Type == api.ServiceTypeNodePort || svc.Spec.Type == api.ServiceTypeLoadBalancer
	if !hasNodePorts || svc.Spec.HealthCheckNodePort < 1 || svc.Spec.HealthCheckNodePort > 65535 {
		return HealthCheck{}
	}
	hc := HealthCheck{Port: uint16(svc.Spec.HealthCheckNodePort)}
	closed := !in.Policy.Listen.Listening(in.Cluster.Local.Pool)
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 && closed {
			return hc // a node port the load balancer targets is dropped here
		}
	}
	m := &model{in: in, slices: parseSlices(in.Slices)}
	local := map[netip.Addr]bool{}
	for _, p := range svc.Spec.Ports {
		proto, err := protoOf(p.Protocol)
		if err != nil {
			continue // Frontends reports it
		}
		for _, c := range m.candidates(portName{p.Name, proto}) {
			if c.ready && c.node != "" && c.node == in.Cluster.Local.Name {
				local[c.ip] = true
			}
		}
	}
	hc.LocalEndpoints = len(local)
	return hc
}
