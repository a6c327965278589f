package maptables

import (
	"fmt"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/maps/nodes"
	"github.com/edgeplane/edgeplane/pkg/maps/routes"
)

// The node reconciler's tables (controller/tables.go) and the pod garbage collector's.

type routeTable struct{ m *routes.Map }

func (t routeTable) Upsert(p netip.Prefix, r controller.Route) error {
	ip, err := maps.IPv4From(r.NodeIP)
	if err != nil {
		return fmt.Errorf("route %s: %w", p, err)
	}
	v := routes.Route{NodeIP: ip, Domain: r.Domain, Encap: uint8(r.Encap)}
	if r.Local {
		v.Flags |= routes.FlagLocal
	}
	return t.m.Upsert(p, v)
}

func (t routeTable) Delete(p netip.Prefix) error { return t.m.Delete(p) }

func (t routeTable) List() (map[netip.Prefix]controller.Route, error) {
	out := map[netip.Prefix]controller.Route{}
	err := t.Walk(func(p netip.Prefix, r controller.Route) { out[p] = r })
	return out, err
}

// Walk visits every route, read in batches, without a map of them all (the snapshot's writes).
func (t routeTable) Walk(fn func(netip.Prefix, controller.Route)) error {
	return t.m.IterateBatch(func(p netip.Prefix, r routes.Route) bool {
		fn(p, controller.Route{NodeIP: r.NodeIP.Addr(), Domain: r.Domain, Encap: controller.Encap(r.Encap), Local: r.Flags&routes.FlagLocal != 0})
		return true
	})
}

type nodeTable struct{ m *nodes.Map }

func (t nodeTable) Upsert(ip netip.Addr, n controller.Node) error {
	v := nodes.Node{Domain: n.Domain}
	if copy(v.VtepMAC[:], n.VTEPMAC) != 6 {
		return fmt.Errorf("node %s: VTEP MAC %s is not an Ethernet address", ip, n.VTEPMAC)
	}
	if copy(v.NexthopMAC[:], n.NextHopMAC) == 6 {
		v.Flags |= nodes.FlagNexthopValid
	}
	return t.m.Upsert(ip, v)
}

func (t nodeTable) Delete(ip netip.Addr) error { return t.m.Delete(ip) }

func (t nodeTable) List() (map[netip.Addr]controller.Node, error) {
	out := map[netip.Addr]controller.Node{}
	err := t.Walk(func(ip netip.Addr, n controller.Node) { out[ip] = n })
	return out, err
}

// Walk visits every node, read in batches, without a map of them all (the snapshot's writes).
func (t nodeTable) Walk(fn func(netip.Addr, controller.Node)) error {
	return t.m.IterateBatch(func(ip netip.Addr, n nodes.Node) bool {
		v := controller.Node{VTEPMAC: n.VtepMAC[:], Domain: n.Domain}
		if n.Flags&nodes.FlagNexthopValid != 0 {
			v.NextHopMAC = n.NexthopMAC[:]
		}
		fn(ip, v)
		return true
	})
}

type endpointTable struct{ m *endpoints.Map }

func (t endpointTable) Delete(ip netip.Addr) error { return t.m.Delete(ip) }

func (t endpointTable) List() (map[netip.Addr]controller.Endpoint, error) {
	out := map[netip.Addr]controller.Endpoint{}
	err := t.m.Iterate(func(ip netip.Addr, e endpoints.Endpoint) bool {
		out[ip] = controller.Endpoint{Ifindex: int(e.Ifindex)}
		return true
	})
	return out, err
}

type domainTable struct{ m *domainsmap.Map }

func (t domainTable) Upsert(id uint32, d controller.Domain) error {
	var flags uint32
	if d.Reachable {
		flags |= domainsmap.FlagReachable
	}
	if d.Local {
		flags |= domainsmap.FlagLocal
	}
	v, err := domainsmap.New(d.Name, flags)
	if err != nil {
		return err
	}
	return t.m.Upsert(id, v)
}

func (t domainTable) Delete(id uint32) error { return t.m.Delete(id) }

func (t domainTable) List() (map[uint32]controller.Domain, error) {
	all, err := t.m.List()
	out := make(map[uint32]controller.Domain, len(all))
	for id, d := range all {
		out[id] = controller.Domain{Name: d.NameString(), Reachable: d.Reachable(), Local: d.Local()}
	}
	return out, err
}
