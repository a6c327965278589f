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
// service reconciler read, in a 160-byte struct where the decoded corev1.Service takes ~900 before
// its strings (its ObjectMeta, a ServiceSpec of 25 fields, the status), so 10,000 Services cost
// ~7 MiB less (docs/benchmarks.md, "Services cold start", "Scale"). What most Services leave unset
// (labels and annotations the agent reads, external IPs, a load balancer's ingress, session
// affinity's timeout, a health check node port, a traffic distribution, more cluster IPs than
// one) is behind one pointer, nil for most. Object rebuilds the *corev1.Service the model takes,
// for one reconcile.
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
	Created                          int64 // creationTimestamp, Unix seconds

	Type                  corev1.ServiceType
	ClusterIP             string
	Ports                 []ServicePort
	SessionAffinity       corev1.ServiceAffinity
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy
	InternalTrafficPolicy *corev1.ServiceInternalTrafficPolicy
	// OneClusterIP says spec.clusterIPs is [ClusterIP], as for most Services; otherwise
	// Extras.ClusterIPs holds it.
	OneClusterIP bool
	*ServiceExtras
}

// ServiceExtras are the fields of a Service most leave unset; nil when all are.
type ServiceExtras struct {
	Labels, Annotations   map[string]string // only the kept keys; nil when none
	ClusterIPs            []string          // when not [ClusterIP] (Service.OneClusterIP)
	ExternalIPs           []string
	SessionAffinityConfig *corev1.SessionAffinityConfig
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

// extras is s's rarely set fields, the zero value when none is set.
func (s *Service) extras() ServiceExtras {
	if s.ServiceExtras == nil {
		return ServiceExtras{}
	}
	return *s.ServiceExtras
}

// GetObjectMeta makes the Service a metav1.ObjectMetaAccessor, which is what client-go's store
// reads for its keys (namespace/name) and what cache.MetaNamespaceKeyFunc takes.
func (s *Service) GetObjectMeta() metav1.Object {
	x := s.extras()
	return &metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion, UID: s.UID,
		Labels: x.Labels, Annotations: x.Annotations}
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
		Type:                  corev1.ServiceType(interned(string(spec.Type))),
		ClusterIP:             spec.ClusterIP,
		OneClusterIP:          len(spec.ClusterIPs) == 1 && spec.ClusterIPs[0] == spec.ClusterIP,
		SessionAffinity:       corev1.ServiceAffinity(interned(string(spec.SessionAffinity))),
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicy(interned(string(spec.ExternalTrafficPolicy))),
		InternalTrafficPolicy: spec.InternalTrafficPolicy,
	}
	if o.CreationTimestamp.IsZero() {
		s.Created = 0
	}
	x := ServiceExtras{
		Labels:                keep(o.Labels, service.ProxyNameLabel),
		Annotations:           keep(o.Annotations, service.TopologyAnnotation, service.ListenAnnotation),
		ExternalIPs:           spec.ExternalIPs,
		SessionAffinityConfig: spec.SessionAffinityConfig,
		HealthCheckNodePort:   spec.HealthCheckNodePort,
		TrafficDistribution:   spec.TrafficDistribution,
		Ingress:               o.Status.LoadBalancer.Ingress,
	}
	if !s.OneClusterIP {
		x.ClusterIPs = spec.ClusterIPs
		if len(x.ClusterIPs) > 0 && x.ClusterIPs[0] == s.ClusterIP {
			x.ClusterIPs[0] = s.ClusterIP // one copy of the string
		}
	}
	if x.Labels != nil || x.Annotations != nil || x.ClusterIPs != nil || x.ExternalIPs != nil || x.SessionAffinityConfig != nil ||
		x.HealthCheckNodePort != 0 || x.TrafficDistribution != nil || x.Ingress != nil {
		s.ServiceExtras = &x
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
	x := s.extras()
	o := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion, UID: s.UID,
			Labels: maps.Clone(x.Labels), Annotations: maps.Clone(x.Annotations)},
		Spec: corev1.ServiceSpec{
			Type:                  s.Type,
			ClusterIP:             s.ClusterIP,
			ClusterIPs:            slices.Clone(x.ClusterIPs),
			ExternalIPs:           slices.Clone(x.ExternalIPs),
			SessionAffinity:       s.SessionAffinity,
			SessionAffinityConfig: x.SessionAffinityConfig.DeepCopy(),
			ExternalTrafficPolicy: s.ExternalTrafficPolicy,
			HealthCheckNodePort:   x.HealthCheckNodePort,
		},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: slices.Clone(x.Ingress)}},
	}
	if s.OneClusterIP {
		o.Spec.ClusterIPs = []string{s.ClusterIP}
	}
	if s.Created != 0 {
		o.CreationTimestamp = metav1.Unix(s.Created, 0)
	}
	if p := s.InternalTrafficPolicy; p != nil {
		v := *p
		o.Spec.InternalTrafficPolicy = &v
	}
	if d := x.TrafficDistribution; d != nil {
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
