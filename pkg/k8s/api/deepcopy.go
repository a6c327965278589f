package api

import (
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The types an API client decodes into are runtime.Objects: they copy themselves whole.

func (s *Service) DeepCopyObject() runtime.Object {
	c := *s
	s.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Spec.Ports = slices.Clone(s.Spec.Ports)
	c.Spec.ClusterIPs = slices.Clone(s.Spec.ClusterIPs)
	c.Spec.ExternalIPs = slices.Clone(s.Spec.ExternalIPs)
	c.Spec.SessionAffinityConfig = s.Spec.SessionAffinityConfig.DeepCopy()
	c.Spec.InternalTrafficPolicy = clonePtr(s.Spec.InternalTrafficPolicy)
	c.Spec.TrafficDistribution = clonePtr(s.Spec.TrafficDistribution)
	if in := s.Status.LoadBalancer.Ingress; in != nil {
		c.Status.LoadBalancer.Ingress = make([]LoadBalancerIngress, len(in))
		for i := range in {
			in[i].DeepCopyInto(&c.Status.LoadBalancer.Ingress[i])
		}
	}
	return &c
}

// DeepCopy is a copy of a that shares nothing with it; nil for nil.
func (a *SessionAffinityConfig) DeepCopy() *SessionAffinityConfig {
	if a == nil {
		return nil
	}
	c := &SessionAffinityConfig{}
	if a.ClientIP != nil {
		c.ClientIP = &ClientIPConfig{TimeoutSeconds: clonePtr(a.ClientIP.TimeoutSeconds)}
	}
	return c
}

// DeepCopyInto copies in into out, sharing nothing with it.
func (in *LoadBalancerIngress) DeepCopyInto(out *LoadBalancerIngress) {
	*out = *in
	out.IPMode = clonePtr(in.IPMode)
}

// DeepCopyInto copies in into out, sharing nothing with it.
func (in *Taint) DeepCopyInto(out *Taint) {
	*out = *in
	if in.TimeAdded != nil {
		out.TimeAdded = in.TimeAdded.DeepCopy()
	}
}

func (l *ServiceList) DeepCopyObject() runtime.Object {
	return &ServiceList{TypeMeta: l.TypeMeta, ListMeta: *l.ListMeta.DeepCopy(), Items: copyItems(l.Items, (*Service).DeepCopyObject)}
}

func (s *EndpointSlice) DeepCopyObject() runtime.Object {
	c := *s
	s.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	if s.Endpoints != nil {
		c.Endpoints = make([]Endpoint, len(s.Endpoints))
		for i, e := range s.Endpoints {
			e.Addresses = slices.Clone(e.Addresses)
			e.Conditions = EndpointConditions{Ready: clonePtr(e.Conditions.Ready), Serving: clonePtr(e.Conditions.Serving),
				Terminating: clonePtr(e.Conditions.Terminating)}
			e.Hostname, e.NodeName, e.Zone = clonePtr(e.Hostname), clonePtr(e.NodeName), clonePtr(e.Zone)
			e.TargetRef = clonePtr(e.TargetRef)
			if h := e.Hints; h != nil {
				e.Hints = &EndpointHints{ForZones: slices.Clone(h.ForZones), ForNodes: slices.Clone(h.ForNodes)}
			}
			c.Endpoints[i] = e
		}
	}
	if s.Ports != nil {
		c.Ports = make([]EndpointPort, len(s.Ports))
		for i, p := range s.Ports {
			c.Ports[i] = EndpointPort{Name: clonePtr(p.Name), Protocol: clonePtr(p.Protocol), Port: clonePtr(p.Port)}
		}
	}
	return &c
}

func (l *EndpointSliceList) DeepCopyObject() runtime.Object {
	return &EndpointSliceList{TypeMeta: l.TypeMeta, ListMeta: *l.ListMeta.DeepCopy(), Items: copyItems(l.Items, (*EndpointSlice).DeepCopyObject)}
}

func (p *Pod) DeepCopyObject() runtime.Object {
	c := *p
	p.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Status.PodIPs = slices.Clone(p.Status.PodIPs)
	return &c
}

func (l *PodList) DeepCopyObject() runtime.Object {
	return &PodList{TypeMeta: l.TypeMeta, ListMeta: *l.ListMeta.DeepCopy(), Items: copyItems(l.Items, (*Pod).DeepCopyObject)}
}

func (m *ConfigMap) DeepCopyObject() runtime.Object {
	c := *m
	m.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Data = maps.Clone(m.Data)
	return &c
}

func (l *ConfigMapList) DeepCopyObject() runtime.Object {
	return &ConfigMapList{TypeMeta: l.TypeMeta, ListMeta: *l.ListMeta.DeepCopy(), Items: copyItems(l.Items, (*ConfigMap).DeepCopyObject)}
}

func (s *Secret) DeepCopyObject() runtime.Object {
	c := *s
	s.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	if s.Data != nil {
		c.Data = make(map[string][]byte, len(s.Data))
		for k, v := range s.Data {
			c.Data[k] = slices.Clone(v)
		}
	}
	return &c
}

func (e *Event) DeepCopyObject() runtime.Object {
	c := *e
	e.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	e.FirstTimestamp.DeepCopyInto(&c.FirstTimestamp)
	e.LastTimestamp.DeepCopyInto(&c.LastTimestamp)
	e.EventTime.DeepCopyInto(&c.EventTime)
	return &c
}

func (n *Node) DeepCopyObject() runtime.Object {
	c := *n
	n.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Spec.PodCIDRs = slices.Clone(n.Spec.PodCIDRs)
	if n.Spec.Taints != nil {
		c.Spec.Taints = make([]Taint, len(n.Spec.Taints))
		for i := range n.Spec.Taints {
			n.Spec.Taints[i].DeepCopyInto(&c.Spec.Taints[i])
		}
	}
	c.Status.Addresses = slices.Clone(n.Status.Addresses)
	return &c
}

func (l *NodeList) DeepCopyObject() runtime.Object {
	return &NodeList{TypeMeta: l.TypeMeta, ListMeta: *l.ListMeta.DeepCopy(), Items: copyItems(l.Items, (*Node).DeepCopyObject)}
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

func copyItems[T any, P interface {
	*T
	runtime.Object
}](items []T, deepCopy func(P) runtime.Object) []T {
	if items == nil {
		return nil
	}
	c := make([]T, len(items))
	for i := range items {
		c[i] = *deepCopy(P(&items[i])).(P)
	}
	return c
}

// An ObjectReference is a runtime.Object too, as the API's is: events name the object they are
// about with one.

func (r *ObjectReference) DeepCopyObject() runtime.Object { c := *r; return &c }

func (r *ObjectReference) GetObjectKind() schema.ObjectKind { return r }

// SetGroupVersionKind sets the reference's kind and API version.
func (r *ObjectReference) SetGroupVersionKind(gvk schema.GroupVersionKind) {
	r.APIVersion, r.Kind = gvk.ToAPIVersionAndKind()
}

// GroupVersionKind is the reference's kind and API version.
func (r *ObjectReference) GroupVersionKind() schema.GroupVersionKind {
	return schema.FromAPIVersionAndKind(r.APIVersion, r.Kind)
}

// DeepCopy is a copy that shares nothing with the object (without these, the embedded
// ObjectMeta's DeepCopy would be the type's, copying only the metadata).

func (s *Service) DeepCopy() *Service             { return s.DeepCopyObject().(*Service) }
func (s *EndpointSlice) DeepCopy() *EndpointSlice { return s.DeepCopyObject().(*EndpointSlice) }
func (p *Pod) DeepCopy() *Pod                     { return p.DeepCopyObject().(*Pod) }
func (m *ConfigMap) DeepCopy() *ConfigMap         { return m.DeepCopyObject().(*ConfigMap) }
func (s *Secret) DeepCopy() *Secret               { return s.DeepCopyObject().(*Secret) }
func (e *Event) DeepCopy() *Event                 { return e.DeepCopyObject().(*Event) }
func (n *Node) DeepCopy() *Node                   { return n.DeepCopyObject().(*Node) }
