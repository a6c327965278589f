package k8s

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The compact Service and EndpointSlice are runtime.Objects so that a list of them is an API list
// (decodeList trims a list's items as it decodes them, and client-go's reflector extracts the
// items of a list as runtime.Objects). They carry no kind: the informers know theirs.

var (
	_ runtime.Object = (*Service)(nil)
	_ runtime.Object = (*EndpointSlice)(nil)
)

func (*Service) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (s *Service) DeepCopyObject() runtime.Object {
	c := *s
	c.Labels, c.Annotations = maps.Clone(s.Labels), maps.Clone(s.Annotations)
	c.ClusterIPs, c.ExternalIPs, c.Ports = slices.Clone(s.ClusterIPs), slices.Clone(s.ExternalIPs), slices.Clone(s.Ports)
	c.SessionAffinityConfig = s.SessionAffinityConfig.DeepCopy()
	if p := s.InternalTrafficPolicy; p != nil {
		v := *p
		c.InternalTrafficPolicy = &v
	}
	if d := s.TrafficDistribution; d != nil {
		v := *d
		c.TrafficDistribution = &v
	}
	if s.Ingress != nil {
		c.Ingress = make([]corev1.LoadBalancerIngress, len(s.Ingress))
		for i := range s.Ingress {
			s.Ingress[i].DeepCopyInto(&c.Ingress[i])
		}
	}
	return &c
}

func (*EndpointSlice) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (s *EndpointSlice) DeepCopyObject() runtime.Object {
	c := *s
	c.Ports, c.Endpoints = slices.Clone(s.Ports), slices.Clone(s.Endpoints)
	return &c
}
