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
	c.Ports = slices.Clone(s.Ports)
	if s.ServiceExtras != nil {
		x := *s.ServiceExtras
		x.Labels, x.Annotations = maps.Clone(x.Labels), maps.Clone(x.Annotations)
		x.ClusterIPs, x.ExternalIPs = slices.Clone(x.ClusterIPs), slices.Clone(x.ExternalIPs)
		x.SessionAffinityConfig = x.SessionAffinityConfig.DeepCopy()
		x.Unknown = maps.Clone(x.Unknown)
		if d := x.TrafficDistribution; d != nil {
			v := *d
			x.TrafficDistribution = &v
		}
		if x.Ingress != nil {
			x.Ingress = make([]corev1.LoadBalancerIngress, len(s.Ingress))
			for i := range s.Ingress {
				s.Ingress[i].DeepCopyInto(&x.Ingress[i])
			}
		}
		c.ServiceExtras = &x
	}
	return &c
}

func (*EndpointSlice) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (s *EndpointSlice) DeepCopyObject() runtime.Object {
	c := *s
	c.Ports, c.Endpoints = slices.Clone(s.Ports), slices.Clone(s.Endpoints)
	return &c
}
