package k8s

import (
	"net/netip"
	"strings"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// EndpointSlice is an EndpointSlice as the agent's cache holds it (TrimForCache): only what
// pkg/service reads, ~24 bytes an endpoint where the decoded object takes ~150 (an Endpoint
// struct of 96 bytes, its address slice and string, three *bool). With 10,000 Services of 10
// endpoints that is ~5 MiB instead of ~25 (docs/benchmarks.md, "Services cold start").
// Object rebuilds the *api.EndpointSlice the model takes, for one reconcile.
//
// What the model would skip is not kept, so Object gives it the same result as the full
// object: endpoints of slices that are not IPv4 or are a headless Service's, endpoints whose
// first address is not IPv4 (the model uses only the first), ports without a number. Conditions
// are kept resolved as the API defines unset ones, and set on the rebuilt object.
type EndpointSlice struct {
	Namespace, Name, ResourceVersion string
	ServiceName                      string // label kubernetes.io/service-name; "" when absent
	Ports                            []SlicePort
	Endpoints                        []SliceEndpoint
	addressType                      handle[string] // 8 bytes: the struct is 128 (a 144-byte allocation with a string)
	Headless                         bool           // label service.kubernetes.io/headless is present
}

// AddressType is the slice's addressType.
func (s *EndpointSlice) AddressType() api.AddressType {
	return api.AddressType(s.addressType.get())
}

// SlicePort is an EndpointSlice port in 24 bytes (its name and protocol interned handles, not
// strings: 48 with them); an unset name or protocol is "".
type SlicePort struct {
	name, protocol handle[string]
	Port           int32
}

func newSlicePort(name, protocol string, port int32) SlicePort {
	return SlicePort{name: handleOf(name), protocol: handleOf(protocol), Port: port}
}

// Name is the port's name.
func (p SlicePort) Name() string { return p.name.get() }

// Protocol is the port's protocol.
func (p SlicePort) Protocol() api.Protocol { return api.Protocol(p.protocol.get()) }

// handle is an interned value in 8 bytes (a string takes 16, a placement 48), kept once however
// many hold it; the zero handle is the zero value.
type handle[T comparable] struct{ h unique.Handle[T] }

func handleOf[T comparable](v T) handle[T] {
	var zero T
	if v == zero {
		return handle[T]{}
	}
	return handle[T]{unique.Make(v)}
}

func (h handle[T]) get() T {
	if h == (handle[T]{}) {
		var zero T
		return zero
	}
	return h.h.Value()
}

// SliceEndpoint is an endpoint with an IPv4 first address, in 16 bytes: 150,000 of them (issue
// 18's scale) take 2.4 MB. Its node, zone and zone hints are one interned placement, as the
// endpoints of one node share them.
type SliceEndpoint struct {
	Address                     [4]byte
	Ready, Serving, Terminating bool
	at                          handle[placement] // 8 bytes an endpoint
}

// Node is the endpoint's nodeName; "" when unset.
func (e *SliceEndpoint) Node() string { return e.at.get().node }

// placement is where an endpoint is: its nodeName, zone, and the zones of its hints.forZones
// joined by commas ("" when unset); kept once however many endpoints share it.
type placement struct{ node, zone, hints string }

// GetObjectMeta makes the slice a metav1.ObjectMetaAccessor, which is what client-go's store
// reads for its keys (namespace/name) and resource versions. Labels are not in it: the
// service-name index reads ServiceName.
func (s *EndpointSlice) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion}
}

// compactSlice is o as the cache keeps it.
func compactSlice(o *api.EndpointSlice) *EndpointSlice {
	s := &EndpointSlice{
		Namespace:       unique.Make(o.Namespace).Value(),
		Name:            o.Name,
		ResourceVersion: o.ResourceVersion,
		addressType:     handleOf(string(o.AddressType)),
	}
	if svc := o.Labels[api.LabelServiceName]; strings.HasPrefix(o.Name, svc) {
		s.ServiceName = o.Name[:len(svc)] // the usual "<service>-<suffix>": one copy of the bytes
	} else {
		s.ServiceName = svc
	}
	_, s.Headless = o.Labels[api.IsHeadlessService]
	for _, p := range o.Ports {
		if p.Port == nil {
			continue
		}
		if s.Ports == nil {
			s.Ports = make([]SlicePort, 0, len(o.Ports))
		}
		var name, protocol string
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			protocol = string(*p.Protocol)
		}
		s.Ports = append(s.Ports, newSlicePort(name, protocol, *p.Port))
	}
	if o.AddressType != api.AddressTypeIPv4 || s.Headless {
		return s
	}
	for _, e := range o.Endpoints {
		ip, ok := service.EndpointIPv4(e) // what the model would read of it
		if !ok {
			continue
		}
		if s.Endpoints == nil {
			s.Endpoints = make([]SliceEndpoint, 0, len(o.Endpoints))
		}
		ep := SliceEndpoint{Address: ip.As4()}
		var at placement
		if e.NodeName != nil {
			at.node = *e.NodeName
		}
		if e.Zone != nil {
			at.zone = *e.Zone
		}
		if e.Hints != nil && len(e.Hints.ForZones) > 0 {
			zones := make([]string, len(e.Hints.ForZones))
			for i, z := range e.Hints.ForZones {
				zones[i] = z.Name
			}
			at.hints = strings.Join(zones, ",")
		}
		ep.at = handleOf(at)
		ep.Ready, ep.Serving, ep.Terminating = service.Conditions(e.Conditions)
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

// endpointFields holds what the rebuilt endpoints point to: one allocation for all of them.
type endpointFields struct {
	address                     [1]string
	node, zone                  string
	ready, serving, terminating bool
	hints                       api.EndpointHints
}

// Object rebuilds the EndpointSlice as the model reads it. It shares no memory with the cache.
func (s *EndpointSlice) Object() *api.EndpointSlice {
	labels := map[string]string{}
	if s.ServiceName != "" {
		labels[api.LabelServiceName] = s.ServiceName
	}
	if s.Headless {
		labels[api.IsHeadlessService] = ""
	}
	o := &api.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion, Labels: labels},
		AddressType: s.AddressType(),
	}
	if len(s.Ports) > 0 {
		type portFields struct {
			name     string
			protocol api.Protocol
			port     int32
		}
		ports := make([]portFields, len(s.Ports))
		o.Ports = make([]api.EndpointPort, len(ports))
		for i, sp := range s.Ports {
			p := &ports[i]
			*p = portFields{sp.Name(), sp.Protocol(), sp.Port}
			o.Ports[i] = api.EndpointPort{Name: &p.name, Protocol: &p.protocol, Port: &p.port}
			if p.protocol == "" {
				o.Ports[i].Protocol = nil
			}
		}
	}
	if len(s.Endpoints) > 0 {
		fields := make([]endpointFields, len(s.Endpoints))
		o.Endpoints = make([]api.Endpoint, len(s.Endpoints))
		for i, e := range s.Endpoints {
			f := &fields[i]
			f.address[0] = netip.AddrFrom4(e.Address).String()
			at := e.at.get()
			f.node, f.zone = at.node, at.zone
			f.ready, f.serving, f.terminating = e.Ready, e.Serving, e.Terminating
			out := &o.Endpoints[i]
			out.Addresses = f.address[:]
			out.Conditions = api.EndpointConditions{Ready: &f.ready, Serving: &f.serving, Terminating: &f.terminating}
			if f.node != "" {
				out.NodeName = &f.node
			}
			if f.zone != "" {
				out.Zone = &f.zone
			}
			if at.hints != "" {
				for _, z := range strings.Split(at.hints, ",") {
					f.hints.ForZones = append(f.hints.ForZones, api.ForZone{Name: z})
				}
				out.Hints = &f.hints
			}
		}
	}
	return o
}
