// Package controller holds the agent's level-triggered reconcilers, built like the Kubernetes
// sample-controller: informer event handlers only queue keys, workers read the current object from a
// lister and make the BPF maps equal to it, failures are retried with a rate limit, and a periodic
// full pass deletes map entries that no longer belong to any object (after a restart the pinned maps
// still hold what the previous agent wrote). The maps are reached through the small interfaces in
// this file, so the reconcilers are tested with in-memory tables; pkg/controller/maptables
// implements them over the pinned BPF maps.
//
// Each reconciler's shell (its config, type, Run and reconcile) is <name>.go (services.go,
// nodes.go, pods.go); its parts are <name>_<part>.go: the event handlers, the start-up pass,
// and what each writes (services_frontends.go, services_backendsets.go, nodes_peers.go,
// nodes_domains.go, ...).
package controller

import (
	"context"
	"net"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
)

// Encap says how packets reach a node's pods.
type Encap uint8

// Values mirror enum route_encap in bpf/lib/routes.h.
const (
	EncapVXLAN  Encap = 0
	EncapDirect Encap = 1
)

// Route is a routes_map value: the node that owns a pod CIDR.
type Route struct {
	NodeIP netip.Addr // tunnel endpoint of the owning node, a nodes_map key
	Domain uint32
	Encap  Encap
	Local  bool // this node's own pod CIDR (ROUTE_LOCAL)
}

// Node is a nodes_map value: how to reach a peer's VTEP.
type Node struct {
	VTEPMAC    net.HardwareAddr
	NextHopMAC net.HardwareAddr // nil: unresolved, the datapath lets the kernel resolve the neighbour
	Domain     uint32
}

// Endpoint is the part of an endpoints_map value the garbage collector needs.
type Endpoint struct {
	Ifindex int // host-side veth of the pod
}

// RouteTable is routes_map.
type RouteTable interface {
	Upsert(netip.Prefix, Route) error
	Delete(netip.Prefix) error // deleting an absent entry is not an error
	List() (map[netip.Prefix]Route, error)
}

// NodeTable is nodes_map, keyed by tunnel endpoint.
type NodeTable interface {
	Upsert(netip.Addr, Node) error
	Delete(netip.Addr) error // deleting an absent entry is not an error
	List() (map[netip.Addr]Node, error)
}

// EndpointTable is endpoints_map as the garbage collector sees it; the CNI plugin writes it.
type EndpointTable interface {
	Delete(netip.Addr) error // deleting an absent entry is not an error
	List() (map[netip.Addr]Endpoint, error)
}

// NextHopResolver finds the outer destination MAC toward a tunnel endpoint: the endpoint itself when
// it is on-link, else the underlay gateway. A nil MAC and nil error mean "not resolved yet".
type NextHopResolver interface {
	NextHop(netip.Addr) (net.HardwareAddr, error)
}

// HopCache is a NextHopResolver that also says, without asking the kernel, which neighbour a
// tunnel endpoint's next hop is: the endpoint itself or its gateway (netdev.CachedNextHops). known
// is false when it keeps no answer; hop is the zero Addr when no neighbour resolves it (no route
// through the underlay). The node reconciler asks it which peers a resolved neighbour concerns.
type HopCache interface {
	CachedHop(ip netip.Addr) (hop netip.Addr, known bool)
}

// NeighbourWatcher reports, until ctx is done, each neighbour the kernel resolves (or whose MAC
// changes) with its MAC.
type NeighbourWatcher interface {
	WatchResolved(ctx context.Context, resolved func(netip.Addr, net.HardwareAddr)) error
}

// Domain is a domains_map value: a network domain as this node sees it.
type Domain struct {
	Name      string
	Reachable bool // this node's pods may exchange traffic with the domain's pods
	Local     bool // this node's own domain
}

// DomainTable is domains_map, keyed by domain ID (pkg/domain.ID).
type DomainTable interface {
	Upsert(uint32, Domain) error
	Delete(uint32) error // deleting an absent entry is not an error
	List() (map[uint32]Domain, error)
}

// HostRoutes replaces the set of kernel routes the agent owns for peers' pod CIDRs with want
// (netdev.HostRoutes).
type HostRoutes interface {
	Sync(want map[netip.Prefix]netdev.HostRoute) error
}

// LocalState is this node's place among the domains, for node_cfg_map and the logs.
type LocalState struct {
	Domain    string
	DomainID  uint32
	Gateway   netip.Addr // the cloud gateway of this node's domain, when it is another node
	IsGateway bool       // this node is its domain's cloud gateway
}

// NodeName is one node the maps route to, by name: an entry of the name index edgeplanectl reads
// (pkg/nameindex), since the maps hold addresses and domain IDs only.
type NodeName struct {
	Name    string
	NodeIP  netip.Addr   // its tunnel endpoint: routes_map's value, nodes_map's key
	PodCIDR netip.Prefix // routes_map's key
	Pool    string       // its node pool label; "" when in no pool
	Domain  string       // its network domain; "" when not known (a node whose pinned state was adopted)
	Local   bool         // this node
}

// NodeIndex receives every node the maps hold, sorted by name, whenever that set changes (and once
// per resync period). It is advisory: a failure is logged and retried, never blocks the maps.
type NodeIndex interface {
	Sync([]NodeName) error
}

// Intact is implemented by a NodeIndex, ServiceIndex or HostRoutes that can tell whether what it
// last synced is still in place (an index file was not removed or changed, no kernel route
// changed): the periodic passes then skip rewriting (or listing) what is unchanged. Without it
// they do it every period.
type Intact interface {
	Intact() bool
}

// isIntact reports whether x says what it last synced is still in place.
func isIntact(x any) bool {
	i, ok := x.(Intact)
	return ok && i.Intact()
}
