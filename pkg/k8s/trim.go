package k8s

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// lastApplied is kubectl apply's copy of the whole object: as large as the object, read by nobody
// here.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// TrimForCache is the informers' transform: it drops, before an object enters a cache, what no
// reconciler of the agent reads, so that 10,000 Services and their EndpointSlices cost the agent
// what it uses rather than what the API server stores. Dropped from every object: managedFields
// (server-side apply bookkeeping, often larger than the spec) and kubectl's last-applied
// annotation; from Nodes, the image list (up to 50 entries a node). Services keep only what
// pkg/service and the reconciler read (trimService); EndpointSlices are cached as the compact
// EndpointSlice of this package. Whatever pkg/controller or pkg/service starts reading of a
// Service or an EndpointSlice must be kept here. Objects are trimmed in place: the informer
// owns them until they enter its store. It may see an object twice (client-go's watch-list
// transforms what it streams, then again what it hands to the informer): trimming is
// idempotent.
func TrimForCache(obj any) (any, error) {
	switch o := obj.(type) {
	case *EndpointSlice:
		return o, nil
	case *discoveryv1.EndpointSlice:
		return compactSlice(o), nil
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[lastApplied] != "" {
			delete(a, lastApplied)
		}
	}
	switch o := obj.(type) {
	case *corev1.Node:
		o.Status.Images = nil
	case *corev1.Service:
		trimService(o)
	}
	return obj, nil
}

// trimService keeps of a Service what the model (pkg/service) and the reconciler read: its
// name, namespace, UID and resourceVersion (keys, events), creationTimestamp (the start-up
// pass's order), the proxy-name label, the two OpenYurt annotations, the spec fields the model
// reads, of each port its name, protocol, port and node port, and the load balancer's ingress.
// The selector (kube-controller-manager turns it into EndpointSlices), target ports (the slices
// carry them) and the other fields go.
func trimService(o *corev1.Service) {
	o.Labels = keep(o.Labels, service.ProxyNameLabel)
	o.Annotations = keep(o.Annotations, service.TopologyAnnotation, service.ListenAnnotation)
	o.OwnerReferences, o.Finalizers = nil, nil
	s := o.Spec
	ports := s.Ports
	for i, p := range ports {
		ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort}
	}
	if len(s.ClusterIPs) > 0 && s.ClusterIPs[0] == s.ClusterIP {
		s.ClusterIPs[0] = s.ClusterIP // one copy of the string
	}
	o.Spec = corev1.ServiceSpec{
		Type:                  s.Type,
		ClusterIP:             s.ClusterIP,
		ClusterIPs:            s.ClusterIPs,
		ExternalIPs:           s.ExternalIPs,
		Ports:                 ports,
		SessionAffinity:       s.SessionAffinity,
		SessionAffinityConfig: s.SessionAffinityConfig,
		ExternalTrafficPolicy: s.ExternalTrafficPolicy,
		InternalTrafficPolicy: s.InternalTrafficPolicy,
		HealthCheckNodePort:   s.HealthCheckNodePort,
		TrafficDistribution:   s.TrafficDistribution,
	}
	o.Status = corev1.ServiceStatus{LoadBalancer: o.Status.LoadBalancer}
}

// keep is m with only the given keys; nil when it has none of them.
func keep(m map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}
