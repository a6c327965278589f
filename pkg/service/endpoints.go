package service

import (
	"net/netip"
	"slices"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// HeadlessLabel marks the EndpointSlices of headless Services, which kube-proxy skips too.
const HeadlessLabel = api.IsHeadlessService

// endpoint is an EndpointSlice endpoint as the model reads it.
type endpoint struct {
	ip                          netip.Addr
	ready, serving, terminating bool
	node, zone                  string
	zoneHints                   []string // hints.forZones (topology-aware routing)
}

// parsedSlice is an IPv4 EndpointSlice: its ports by name and protocol, and its endpoints.
type parsedSlice struct {
	ports     map[portName]uint16
	endpoints []endpoint
}

type portName struct {
	name  string
	proto Proto
}

// parseSlices keeps the IPv4 slices and, of their endpoints, those with an IPv4 address (the
// first, as kube-proxy: the others are the same pod's). Conditions as the API defines them: ready
// unset is ready, serving unset follows ready, terminating unset is not terminating.
func parseSlices(in []*api.EndpointSlice) []parsedSlice {
	out := make([]parsedSlice, 0, len(in))
	for _, s := range in {
		if s == nil || s.AddressType != api.AddressTypeIPv4 {
			continue
		}
		if _, headless := s.Labels[HeadlessLabel]; headless {
			continue
		}
		p := parsedSlice{ports: make(map[portName]uint16, len(s.Ports)), endpoints: make([]endpoint, 0, len(s.Endpoints))}
		for _, port := range s.Ports {
			if port.Port == nil || *port.Port < 1 || *port.Port > 65535 {
				continue
			}
			proto := api.ProtocolTCP
			if port.Protocol != nil {
				proto = *port.Protocol
			}
			lp, err := protoOf(proto)
			if err != nil {
				continue
			}
			name := ""
			if port.Name != nil {
				name = *port.Name
			}
			p.ports[portName{name, lp}] = uint16(*port.Port)
		}
		for _, e := range s.Endpoints {
			ip, ok := EndpointIPv4(e)
			if !ok {
				continue
			}
			ep := endpoint{ip: ip}
			ep.ready, ep.serving, ep.terminating = Conditions(e.Conditions)
			if e.NodeName != nil {
				ep.node = *e.NodeName
			}
			if e.Zone != nil {
				ep.zone = *e.Zone
			}
			if e.Hints != nil {
				for _, z := range e.Hints.ForZones {
					ep.zoneHints = append(ep.zoneHints, z.Name)
				}
			}
			p.endpoints = append(p.endpoints, ep)
		}
		out = append(out, p)
	}
	return out
}

// EndpointIPv4 is the address of e the model uses: its first (as kube-proxy: the others are the
// same pod's), when it is IPv4.
func EndpointIPv4(e api.Endpoint) (netip.Addr, bool) {
	if len(e.Addresses) == 0 {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(e.Addresses[0])
	return ip, err == nil && ip.Is4()
}

// Conditions are an endpoint's conditions as the API defines unset ones: ready unset is ready,
// serving unset follows ready, terminating unset is not terminating.
func Conditions(c api.EndpointConditions) (ready, serving, terminating bool) {
	ready = c.Ready == nil || *c.Ready
	serving = ready
	if c.Serving != nil {
		serving = *c.Serving
	}
	return ready, serving, c.Terminating != nil && *c.Terminating
}

// candidate is an endpoint of one service port: its backend and its endpoint.
type candidate struct {
	Backend
	endpoint
}

// backends are the port's backends for cluster-wide traffic policies (cluster) and for Local
// ones (local), each sorted, and how many endpoints cluster leaves out because this node cannot
// reach them: those the choice would have taken were they reachable. Unreachable endpoints go
// first, as if they did not exist: an unreachable ready endpoint does not stop the fallback to
// reachable terminating ones, nor an unreachable one in this zone the fallback to other zones.
// This node's own endpoints are always reachable, so local loses none.
func (m *model) backends(p api.ServicePort, proto Proto) (cluster, local []Backend, unreachable int) {
	cands := m.nearby(m.candidates(portName{p.Name, proto}))
	c := m.in.Cluster
	reachable := filter(cands, func(e candidate) bool { return c.reaches(e.node, e.ip) })
	cluster, local = m.choose(reachable)
	if len(reachable) == len(cands) {
		return cluster, local, 0
	}
	left := map[Backend]bool{}
	for _, e := range cands {
		if !c.reaches(e.node, e.ip) {
			left[e.Backend] = true
		}
	}
	wouldBe, _ := m.choose(cands)
	for _, b := range wouldBe {
		if left[b] {
			unreachable++
		}
	}
	return cluster, local, unreachable
}

// choose applies readiness, the Local policies and trafficDistribution to cands.
func (m *model) choose(cands []candidate) (cluster, local []Backend) {
	c := m.in.Cluster
	isLocal := func(e candidate) bool { return e.node != "" && e.node == c.Local.Name }
	ready := filter(cands, func(e candidate) bool { return e.ready })
	fallback := func(keep func(candidate) bool) []Backend {
		// kube-proxy's fallback: no ready endpoint, so the serving ones that are terminating.
		return backendsOf(filter(cands, func(e candidate) bool { return e.serving && e.terminating && keep(e) }))
	}

	if len(ready) > 0 {
		cluster = backendsOf(m.preferred(ready, isLocal))
	} else {
		cluster = fallback(func(candidate) bool { return true })
	}
	if l := filter(ready, isLocal); len(l) > 0 {
		local = backendsOf(l)
	} else {
		local = fallback(isLocal)
	}
	return cluster, local
}

// candidates are the endpoints of the slices that have a port named like the service port, with
// that slice's port number (a named targetPort can differ between slices); duplicates (an
// endpoint in two slices while it moves) count once, the readier one.
func (m *model) candidates(port portName) []candidate {
	n := 0
	for _, s := range m.slices {
		if _, ok := s.ports[port]; ok {
			n += len(s.endpoints)
		}
	}
	out := make([]candidate, 0, n)
	// Duplicates are looked up in a map only where a linear search would cost more: the model runs
	// for every Service at start-up, most with a handful of endpoints (docs/benchmarks.md, cold
	// start).
	var byBackend map[Backend]int
	if n > smallSet {
		byBackend = make(map[Backend]int, n)
	}
	for _, s := range m.slices {
		target, ok := s.ports[port]
		if !ok {
			continue
		}
		for _, e := range s.endpoints {
			c := candidate{Backend{IP: e.ip, Port: target}, e}
			i, dup := -1, false
			if byBackend != nil {
				i, dup = byBackend[c.Backend]
			} else if i = slices.IndexFunc(out, func(o candidate) bool { return o.Backend == c.Backend }); i >= 0 {
				dup = true
			}
			if dup {
				if rank(c.endpoint) > rank(out[i].endpoint) {
					out[i] = c
				}
				continue
			}
			if byBackend != nil {
				byBackend[c.Backend] = len(out)
			}
			out = append(out, c)
		}
	}
	return out
}

// smallSet is the number of candidates up to which duplicates are found by a linear search.
const smallSet = 32

func rank(e endpoint) int {
	switch {
	case e.ready:
		return 2
	case e.serving:
		return 1
	}
	return 0
}

// nearby applies the OpenYurt topology: endpoints on this node, or on nodes of its pool. A node in
// no pool is a plain Kubernetes node (docs/services.md): the pool topology does not narrow what it
// uses. Endpoints whose node is not known are not near anything.
func (m *model) nearby(cands []candidate) []candidate {
	c := m.in.Cluster
	switch m.in.Policy.Topology {
	case TopologyNode:
		return filter(cands, func(e candidate) bool { return e.node != "" && e.node == c.Local.Name })
	case TopologyPool:
		if c.Local.Pool == "" {
			return cands
		}
		return filter(cands, func(e candidate) bool { return e.node != "" && c.PoolOf(e.node) == c.Local.Pool })
	}
	return cands
}

// preferred applies trafficDistribution to ready endpoints: PreferClose (PreferSameZone) keeps
// those in this node's zone (endpoint.zone against the node's topology.kubernetes.io/zone) when
// there are any; PreferSameNode keeps those on this node, else those of its zone. Without it, the
// topology hints (hinted). Otherwise, or when nothing is that close, every ready endpoint.
func (m *model) preferred(ready []candidate, isLocal func(candidate) bool) []candidate {
	d := m.in.Service.Spec.TrafficDistribution
	zone := m.in.Cluster.Local.Zone
	if d == nil {
		return hinted(ready, zone)
	}
	sameZone := func(e candidate) bool { return zone != "" && e.zone == zone }
	switch *d {
	case api.ServiceTrafficDistributionPreferSameNode:
		if l := filter(ready, isLocal); len(l) > 0 {
			return l
		}
		fallthrough
	case api.ServiceTrafficDistributionPreferClose, api.ServiceTrafficDistributionPreferSameZone:
		if z := filter(ready, sameZone); len(z) > 0 {
			return z
		}
	}
	return ready
}

// hinted applies topology-aware routing (service.kubernetes.io/topology-mode: Auto) as kube-proxy
// does: the EndpointSlice controller spreads the endpoints over the zones in proportion to their
// nodes' CPUs and says which zones each serves (hints.forZones); this node uses those hinted for
// its zone, but only when every ready endpoint carries zone hints and some are for its zone (else
// all of them: hints being added or removed, or a zone left without endpoints), and only when the
// node has a zone.
func hinted(ready []candidate, zone string) []candidate {
	if zone == "" {
		return ready
	}
	forZone := false
	for _, e := range ready {
		if len(e.zoneHints) == 0 {
			return ready
		}
		forZone = forZone || slices.Contains(e.zoneHints, zone)
	}
	if !forZone {
		return ready
	}
	return filter(ready, func(e candidate) bool { return slices.Contains(e.zoneHints, zone) })
}

// filter is the candidates keep keeps: cands itself when it keeps them all (callers never
// modify a filtered slice), else a new slice of exactly those.
func filter(cands []candidate, keep func(candidate) bool) []candidate {
	n := 0
	for _, c := range cands {
		if keep(c) {
			n++
		}
	}
	if n == len(cands) {
		return cands
	}
	if n == 0 {
		return nil
	}
	out := make([]candidate, 0, n)
	for _, c := range cands {
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

func backendsOf(cands []candidate) []Backend {
	out := make([]Backend, 0, len(cands))
	for _, c := range cands {
		out = append(out, c.Backend)
	}
	slices.SortFunc(out, CompareBackends)
	return out
}
