package k8s

import (
	"maps"
	"slices"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// Service is a Service as the agent's cache holds it (TrimForCache): what pkg/service and the
// service reconciler read, in ~300 bytes where the decoded corev1.Service takes ~900 before its
// strings (its ObjectMeta, a ServiceSpec of 25 fields, the status), so 10,000 Services cost ~6
// MiB less (docs/benchmarks.md, "Services cold start"). Object rebuilds the *corev1.Service the
// model takes, for one reconcile.
//
// Kept: name, namespace, UID and resourceVersion (keys, events), creationTimestamp (the start-up
// pass's order; the API has it to the second), the proxy-name label and the two OpenYurt
// annotations, the spec fields the model reads, of each port its name, protocol, port and node
// port, and the load balancer's ingress. The selector (kube-controller-manager turns it into
// EndpointSlices), target ports (the slices carry them) and the other fields go. Whatever
// pkg/controller or pkg/service starts reading of a Service must be kept here.
type Service struct {
	Namespace, Name, ResourceVersion string
	UID                              types.UID
	Created                          int64             // creationTimestamp, Unix seconds
	Labels, Annotations              map[string]string // only the kept keys; nil when none

	Type                  corev1.ServiceType
	ClusterIP             string
	ClusterIPs            []string
	ExternalIPs           []string
	Ports                 []ServicePort
	SessionAffinity       corev1.ServiceAffinity
	SessionAffinityConfig *corev1.SessionAffinityConfig
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy
	InternalTrafficPolicy *corev1.ServiceInternalTrafficPolicy
	HealthCheckNodePort   int32
	TrafficDistribution   *string
	Ingress               []corev1.LoadBalancerIngress
}

// ServicePort is a Service port as the model reads it.
type ServicePort struct {
	Name           string
	Protocol       corev1.Protocol
	Port, NodePort int32
}

// GetObjectMeta makes the Service a metav1.ObjectMetaAccessor, which is what client-go's store
// reads for its keys (namespace/name) and what cache.MetaNamespaceKeyFunc takes.
func (s *Service) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion, UID: s.UID,
		Labels: s.Labels, Annotations: s.Annotations}
}

// The internal traffic policies, one copy each: the cache's Services point at these.
var (
	itpCluster = corev1.ServiceInternalTrafficPolicyCluster
	itpLocal   = corev1.ServiceInternalTrafficPolicyLocal
)

// compactService is o as the cache keeps it.
func compactService(o *corev1.Service) *Service {
	spec := o.Spec
	s := &Service{
		Namespace:             interned(o.Namespace),
		Name:                  o.Name,
		ResourceVersion:       o.ResourceVersion,
		UID:                   o.UID,
		Created:               o.CreationTimestamp.Unix(),
		Labels:                keep(o.Labels, service.ProxyNameLabel),
		Annotations:           keep(o.Annotations, service.TopologyAnnotation, service.ListenAnnotation),
		Type:                  corev1.ServiceType(interned(string(spec.Type))),
		ClusterIP:             spec.ClusterIP,
		ClusterIPs:            spec.ClusterIPs,
		ExternalIPs:           spec.ExternalIPs,
		SessionAffinity:       corev1.ServiceAffinity(interned(string(spec.SessionAffinity))),
		SessionAffinityConfig: spec.SessionAffinityConfig,
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicy(interned(string(spec.ExternalTrafficPolicy))),
		InternalTrafficPolicy: spec.InternalTrafficPolicy,
		HealthCheckNodePort:   spec.HealthCheckNodePort,
		TrafficDistribution:   spec.TrafficDistribution,
		Ingress:               o.Status.LoadBalancer.Ingress,
	}
	if o.CreationTimestamp.IsZero() {
		s.Created = 0
	}
	if len(s.ClusterIPs) > 0 && s.ClusterIPs[0] == s.ClusterIP {
		s.ClusterIPs[0] = s.ClusterIP // one copy of the string
	}
	if p := s.InternalTrafficPolicy; p != nil {
		switch *p {
		case itpCluster:
			s.InternalTrafficPolicy = &itpCluster
		case itpLocal:
			s.InternalTrafficPolicy = &itpLocal
		}
	}
	if len(spec.Ports) > 0 {
		s.Ports = make([]ServicePort, len(spec.Ports))
		for i, p := range spec.Ports {
			s.Ports[i] = ServicePort{Name: interned(p.Name), Protocol: corev1.Protocol(interned(string(p.Protocol))),
				Port: p.Port, NodePort: p.NodePort}
		}
	}
	return s
}

// interned is s, one copy of its bytes however many objects hold it (namespaces, types, port
// names, protocols).
func interned(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// Object rebuilds the Service as the model reads it. It shares no memory with the cache but the
// strings (immutable) and the load balancer ingress entries' nested slices.
func (s *Service) Object() *corev1.Service {
	o := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion, UID: s.UID,
			Labels: maps.Clone(s.Labels), Annotations: maps.Clone(s.Annotations)},
		Spec: corev1.ServiceSpec{
			Type:                  s.Type,
			ClusterIP:             s.ClusterIP,
			ClusterIPs:            slices.Clone(s.ClusterIPs),
			ExternalIPs:           slices.Clone(s.ExternalIPs),
			SessionAffinity:       s.SessionAffinity,
			SessionAffinityConfig: s.SessionAffinityConfig.DeepCopy(),
			ExternalTrafficPolicy: s.ExternalTrafficPolicy,
			HealthCheckNodePort:   s.HealthCheckNodePort,
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: slices.Clone(s.Ingress)}},
	}
	if s.Created != 0 {
		o.CreationTimestamp = metav1.Unix(s.Created, 0)
	}
	if p := s.InternalTrafficPolicy; p != nil {
		v := *p
		o.Spec.InternalTrafficPolicy = &v
	}
	if d := s.TrafficDistribution; d != nil {
		v := *d
		o.Spec.TrafficDistribution = &v
	}
	if len(s.Ports) > 0 {
		o.Spec.Ports = make([]corev1.ServicePort, len(s.Ports))
		for i, p := range s.Ports {
			o.Spec.Ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort}
		}
	}
	return o
}

// ServiceObject is obj, a Service from the cache (compact) or from elsewhere (a test's informer
// without the transform), as the model reads it; nil for anything else.
func ServiceObject(obj any) *corev1.Service {
	switch s := obj.(type) {
	case *Service:
		return s.Object()
	case *corev1.Service:
		return s
	}
	return nil
}
