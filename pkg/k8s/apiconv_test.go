package k8s

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// The tests build objects as k8s.io/api's types, and hold the decoders to what the generated
// code decodes. These make package api's objects of those, field by field for the kinds the
// decoders are held to (any value the generated code decodes: JSON would refuse some and change
// others), through JSON for the rest (convert).

// convert is o's JSON decoded into a new T; it panics on an error, which is the test's.
func convert[T any](o any) *T {
	b, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}

func apiService(o *corev1.Service) *api.Service {
	s := &api.Service{ObjectMeta: *o.ObjectMeta.DeepCopy()}
	in, out := &o.Spec, &s.Spec
	for _, p := range in.Ports {
		out.Ports = append(out.Ports, api.ServicePort{Name: p.Name, Protocol: api.Protocol(p.Protocol), Port: p.Port,
			TargetPort: p.TargetPort, NodePort: p.NodePort})
	}
	out.ClusterIP, out.ClusterIPs, out.Type = in.ClusterIP, in.ClusterIPs, api.ServiceType(in.Type)
	out.ExternalIPs, out.SessionAffinity = in.ExternalIPs, api.ServiceAffinity(in.SessionAffinity)
	out.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicy(in.ExternalTrafficPolicy)
	out.HealthCheckNodePort, out.TrafficDistribution = in.HealthCheckNodePort, in.TrafficDistribution
	if c := in.SessionAffinityConfig; c != nil {
		out.SessionAffinityConfig = &api.SessionAffinityConfig{}
		if c.ClientIP != nil {
			out.SessionAffinityConfig.ClientIP = &api.ClientIPConfig{TimeoutSeconds: c.ClientIP.TimeoutSeconds}
		}
	}
	if p := in.InternalTrafficPolicy; p != nil {
		v := api.ServiceInternalTrafficPolicy(*p)
		out.InternalTrafficPolicy = &v
	}
	for _, ing := range o.Status.LoadBalancer.Ingress {
		i := api.LoadBalancerIngress{IP: ing.IP, Hostname: ing.Hostname}
		if ing.IPMode != nil {
			m := api.LoadBalancerIPMode(*ing.IPMode)
			i.IPMode = &m
		}
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, i)
	}
	return s
}

func apiSlice(o *discoveryv1.EndpointSlice) *api.EndpointSlice {
	s := &api.EndpointSlice{ObjectMeta: *o.ObjectMeta.DeepCopy(), AddressType: api.AddressType(o.AddressType)}
	for _, e := range o.Endpoints {
		c := e.Conditions
		out := api.Endpoint{Addresses: e.Addresses, Hostname: e.Hostname, NodeName: e.NodeName, Zone: e.Zone,
			Conditions: api.EndpointConditions{Ready: c.Ready, Serving: c.Serving, Terminating: c.Terminating}}
		if r := e.TargetRef; r != nil {
			out.TargetRef = &api.ObjectReference{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, UID: r.UID,
				APIVersion: r.APIVersion, ResourceVersion: r.ResourceVersion, FieldPath: r.FieldPath}
		}
		if h := e.Hints; h != nil {
			out.Hints = &api.EndpointHints{}
			for _, z := range h.ForZones {
				out.Hints.ForZones = append(out.Hints.ForZones, api.ForZone{Name: z.Name})
			}
			for _, n := range h.ForNodes {
				out.Hints.ForNodes = append(out.Hints.ForNodes, api.ForNode{Name: n.Name})
			}
		}
		s.Endpoints = append(s.Endpoints, out)
	}
	for _, p := range o.Ports {
		out := api.EndpointPort{Name: p.Name, Port: p.Port}
		if p.Protocol != nil {
			v := api.Protocol(*p.Protocol)
			out.Protocol = &v
		}
		s.Ports = append(s.Ports, out)
	}
	return s
}

func apiNode(o *corev1.Node) *api.Node {
	n := &api.Node{ObjectMeta: *o.ObjectMeta.DeepCopy()}
	n.Spec.PodCIDR, n.Spec.PodCIDRs = o.Spec.PodCIDR, o.Spec.PodCIDRs
	for _, t := range o.Spec.Taints {
		n.Spec.Taints = append(n.Spec.Taints, api.Taint{Key: t.Key, Value: t.Value, Effect: api.TaintEffect(t.Effect),
			TimeAdded: t.TimeAdded.DeepCopy()})
	}
	for _, a := range o.Status.Addresses {
		n.Status.Addresses = append(n.Status.Addresses, api.NodeAddress{Type: api.NodeAddressType(a.Type), Address: a.Address})
	}
	return n
}

// nodeOf, serviceOf and sliceOf are what the cache keeps of an object of k8s.io/api.
func nodeOf(o *corev1.Node) *Node                         { return compactNode(apiNode(o)) }
func serviceOf(o *corev1.Service) *Service                { return compactService(apiService(o)) }
func sliceOf(o *discoveryv1.EndpointSlice) *EndpointSlice { return compactSlice(apiSlice(o)) }

// toAPI is o as package api's type when it is a Service, EndpointSlice or Node of k8s.io/api,
// and o itself otherwise.
func toAPI(o any) any {
	switch o := o.(type) {
	case *corev1.Service:
		return apiService(o)
	case *discoveryv1.EndpointSlice:
		return apiSlice(o)
	case *corev1.Node:
		return apiNode(o)
	}
	return o
}
