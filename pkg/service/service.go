// Package service is edgeplane's model of Kubernetes Services as one node programs them. From a
// Service, its EndpointSlices, where the nodes are (node pools, zones) and what the Service's
// OpenYurt annotations ask (Policy), Frontends computes the frontends this node's datapath holds
// (bpf/lib/lb.h: lb_svc_map) and the backends each one may use. Every policy that depends on where
// the client is, is decided here, per node; the programs only look up and pick. The package is
// pure: no client, no informer, no map (pkg/controller feeds it and writes the maps).
//
// Frontends of a Service, per port and protocol (TCP, UDP, SCTP):
//   - the ClusterIP, scope internal (pods and the node itself);
//   - each externalIP and LoadBalancer ingress IP, in both scopes, flagged external-ip: internal for
//     pods and the node (always the cluster-wide backends, as kube-proxy short-circuits in-cluster
//     traffic), external for packets arriving on the NIC;
//   - the node port of NodePort and LoadBalancer Services (vip 0, scope external, flagged
//     nodeport), closed (no backend: the datapath drops) where NodePort isolation says this node
//     does not listen.
//
// Backends are the endpoints of the EndpointSlices (IPv4 only) of the port's name: the ready ones,
// or, when none is, the serving and terminating ones (kube-proxy's fallback); the target port is
// the slice's port of that name. Narrowed, in this order, by the OpenYurt topology (this node, or
// nodes of its pool), then by the traffic policies (Local: endpoints on this node; external scope
// then also keeps the client's source, flag local) and trafficDistribution (prefer this node's
// zone, or this node then its zone, falling back to every endpoint).
//
// Before all of these, endpoints this node's datapath cannot reach are left out: pods of nodes
// whose network domain is public to this node's (Cluster.SetUnreachable; the datapath would drop
// toward them as DOMAIN_UNREACHABLE). Each frontend counts those it would otherwise have used
// (Frontend.Unreachable); with none reachable it has no backend and refuses like any frontend
// without backends.
package service

import (
	"cmp"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// Reasons of the Warning events the model's findings are recorded with.
const (
	// ReasonInvalidService: a port, protocol or address of the Service cannot be programmed.
	ReasonInvalidService = "InvalidService"
	// ReasonTooManyEndpoints: a frontend has more backends than the datapath holds.
	ReasonTooManyEndpoints = "TooManyEndpoints"
	// ReasonUnsupportedSCTPTargetPort: an SCTP port has endpoints on another port, which the
	// datapath refuses (it translates SCTP addresses only).
	ReasonUnsupportedSCTPTargetPort = "UnsupportedSCTPTargetPort"
)

// DefaultAffinityTimeout is sessionAffinityConfig.clientIP.timeoutSeconds when not set (3 hours).
const DefaultAffinityTimeout = 10800

// FrontendKey is an lb_svc_map key.
type FrontendKey struct {
	VIP   netip.Addr // IPv4; 0.0.0.0 for a node port
	Port  uint16
	Proto Proto
	Scope Scope
}

func (k FrontendKey) String() string {
	return fmt.Sprintf("%s %s/%s", k.Scope, netip.AddrPortFrom(k.VIP, k.Port), k.Proto)
}

// NodePortVIP is the VIP of node port frontends: any address of the node.
var NodePortVIP = netip.IPv4Unspecified()

// Backend is one endpoint a frontend translates to.
type Backend struct {
	IP   netip.Addr
	Port uint16
}

func (b Backend) String() string { return netip.AddrPortFrom(b.IP, b.Port).String() }

// CompareBackends orders backends by address, then port: the slot order of a backend set.
func CompareBackends(a, b Backend) int {
	if c := a.IP.Compare(b.IP); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

// Frontend is what one frontend holds: its lb_svc flags and affinity timeout and, sorted by
// CompareBackends, the backends of its set.
type Frontend struct {
	Flags           Flags
	AffinityTimeout uint32 // seconds, with FlagAffinity
	Backends        []Backend
	// Unreachable counts the backends this frontend leaves out because this node cannot reach
	// them (their node's network domain is public to this node's): those it would use
	// otherwise. Capped at 65535, as lb_svc holds it.
	Unreachable uint16
}

// Equal reports whether two frontends hold the same.
func (f Frontend) Equal(o Frontend) bool {
	return f.Flags == o.Flags && f.AffinityTimeout == o.AffinityTimeout && f.Unreachable == o.Unreachable &&
		slices.Equal(f.Backends, o.Backends)
}

func (f Frontend) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "flags=%s", f.Flags.String())
	if f.Flags&FlagAffinity != 0 {
		fmt.Fprintf(&b, " affinity=%ds", f.AffinityTimeout)
	}
	fmt.Fprintf(&b, " backends=%v", f.Backends)
	if f.Unreachable > 0 {
		fmt.Fprintf(&b, " unreachable=%d", f.Unreachable)
	}
	return b.String()
}

// Node is where a node is, as the model needs it.
type Node struct {
	Name string
	Pool string // "": in no pool
	Zone string // topology.kubernetes.io/zone; "": unknown
}

// Cluster is this node, the pool of every node, and the nodes whose pods this node cannot reach.
type Cluster struct {
	Local       Node
	pools       map[string]string       // node name -> pool, for nodes in a pool
	unreachable map[string]netip.Prefix // node name -> its pod CIDR, for nodes this node cannot reach
}

// NewCluster builds the view from every node's name and labels; local names this node, which may
// be missing from nodes (it is then in no pool and no zone; nodes may be nil). poolLabel is the
// domain model's PoolLabel().
func NewCluster(local string, nodes iter.Seq2[string, labels.Labels], poolLabel string) *Cluster {
	c := &Cluster{Local: Node{Name: local}, pools: map[string]string{}}
	if nodes == nil {
		return c
	}
	for name, nodeLabels := range nodes {
		if pool := nodeLabels.Get(poolLabel); pool != "" {
			c.pools[name] = pool
		}
		if name == local {
			c.Local.Pool, c.Local.Zone = nodeLabels.Get(poolLabel), nodeLabels.Get(ZoneLabel)
		}
	}
	return c
}

// PoolOf is the pool of the node called name; "" when it is in none or unknown.
func (c *Cluster) PoolOf(name string) string { return c.pools[name] }

// SetUnreachable marks the node called name as one whose pods this node's datapath cannot reach
// (its network domain is public to this node's, pkg/domain; the datapath drops toward its pod
// CIDR as DOMAIN_UNREACHABLE): its endpoints inside podCIDR are left out of every frontend. Its
// other endpoints stay: a host network endpoint (the node's own address) is outside every pod
// CIDR, and the datapath leaves such addresses to the host's routing as for any other address.
func (c *Cluster) SetUnreachable(name string, podCIDR netip.Prefix) {
	if c.unreachable == nil {
		c.unreachable = map[string]netip.Prefix{}
	}
	c.unreachable[name] = podCIDR
}

// Unreachable is the nodes SetUnreachable marked, sorted.
func (c *Cluster) Unreachable() []string { return sortedKeys(c.unreachable) }

// reaches reports whether this node's datapath reaches the endpoint ip of the node called node.
func (c *Cluster) reaches(node string, ip netip.Addr) bool {
	cidr, ok := c.unreachable[node]
	return !ok || !cidr.Contains(ip)
}

// Equal reports whether two views place every node alike.
func (c *Cluster) Equal(o *Cluster) bool {
	return c.Local == o.Local && maps.Equal(c.pools, o.pools) && maps.Equal(c.unreachable, o.unreachable)
}

// Input is what Frontends reads.
type Input struct {
	Service *api.Service
	Slices  []*api.EndpointSlice // the Service's (label kubernetes.io/service-name)
	Cluster *Cluster
	// Policy is what the Service's annotations ask, as the caller decided to apply them
	// (TopologyOf and ListenOf, or the last valid values when those fail).
	Policy Policy
	// MaxBackends caps the backends of one frontend; 0 means MaxBackends.
	MaxBackends int
}

// Warning is a finding that does not stop the Service from being programmed: the part concerned
// is left out (a port, an address) or cut short (backends), and the rest is programmed.
type Warning struct {
	Reason  string
	Message string
}

// Result is the frontends this node programs for one Service.
type Result struct {
	Frontends map[FrontendKey]Frontend
	Warnings  []Warning
}

// Frontends computes what this node programs for in.Service. An error means nothing of the
// Service can be programmed (no usable ClusterIP); it names the Service. A Service edgeplane
// leaves alone (Ignored) has no frontends and no error.
func Frontends(in Input) (Result, error) {
	svc := in.Service
	res := Result{Frontends: map[FrontendKey]Frontend{}}
	if _, ignored := Ignored(svc); ignored {
		return res, nil
	}
	name := svc.Namespace + "/" + svc.Name
	clusterIP, ok, err := clusterIPv4(svc)
	if err != nil {
		return res, fmt.Errorf("service %s: %w", name, err)
	}
	if !ok {
		return res, nil // IPv6 only: the datapath is IPv4
	}
	m := &model{in: in, res: &res, name: name, max: in.MaxBackends, slices: parseSlices(in.Slices)}
	if m.max <= 0 || m.max > MaxBackends {
		m.max = MaxBackends
	}
	m.common = commonFlags(svc)
	externalIPs := m.externalIPs()
	hasNodePorts := svc.Spec.Type == api.ServiceTypeNodePort || svc.Spec.Type == api.ServiceTypeLoadBalancer
	listening := !hasNodePorts || in.Policy.Listen.Listening(in.Cluster.Local.Pool)
	etpLocal := svc.Spec.ExternalTrafficPolicy == api.ServiceExternalTrafficPolicyLocal
	itpLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == api.ServiceInternalTrafficPolicyLocal
	var externalFlags Flags
	if etpLocal {
		externalFlags = FlagLocal
	}

	for i, p := range svc.Spec.Ports {
		proto, err := protoOf(p.Protocol)
		if err == nil && (p.Port < 1 || p.Port > 65535) {
			err = fmt.Errorf("port %d is out of range 1-65535", p.Port)
		}
		if err != nil {
			m.warn(ReasonInvalidService, "spec.ports[%d] (%q) left out: %v", i, p.Name, err)
			continue
		}
		cluster, local, unreachable := m.backends(p, proto)
		internal, external := cluster, cluster
		internalUnreachable, externalUnreachable := unreachable, unreachable
		if itpLocal {
			internal, internalUnreachable = local, 0 // this node's endpoints: always reachable
		}
		if etpLocal {
			external, externalUnreachable = local, 0
		}
		port := uint16(p.Port)
		if proto == ProtoSCTP {
			inUse := internal
			if len(externalIPs) > 0 {
				inUse = append(slices.Clip(internal), cluster...)
			}
			m.warnSCTPTargetPorts(i, p, inUse)
		}
		m.add(FrontendKey{VIP: clusterIP, Port: port, Proto: proto, Scope: ScopeInternal}, m.common, internal, internalUnreachable)
		for _, ip := range externalIPs {
			m.add(FrontendKey{VIP: ip, Port: port, Proto: proto, Scope: ScopeInternal}, m.common|FlagExternalIP, cluster, unreachable)
			m.add(FrontendKey{VIP: ip, Port: port, Proto: proto, Scope: ScopeExternal}, m.common|FlagExternalIP|externalFlags, external, externalUnreachable)
		}
		if !hasNodePorts || p.NodePort == 0 { // allocateLoadBalancerNodePorts: false, or not allocated yet
			continue
		}
		if p.NodePort < 1 || p.NodePort > 65535 {
			m.warn(ReasonInvalidService, "spec.ports[%d] (%q): node port %d is out of range 1-65535; left out", i, p.Name, p.NodePort)
			continue
		}
		key := FrontendKey{VIP: NodePortVIP, Port: uint16(p.NodePort), Proto: proto, Scope: ScopeExternal}
		if !listening {
			m.addFrontend(key, Frontend{Flags: FlagNodePort | FlagClosed})
			continue
		}
		m.add(key, m.common|FlagNodePort|externalFlags, external, externalUnreachable)
	}
	return res, nil
}

// model is one run of Frontends.
type model struct {
	in     Input
	res    *Result
	name   string
	max    int
	common Flags // flags of every open frontend (affinity)
	slices []parsedSlice
}

func (m *model) warn(reason, format string, args ...any) {
	m.res.Warnings = append(m.res.Warnings, Warning{Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// warnSCTPTargetPorts reports backends of SCTP port p that listen on another port than p's own
// (targetPort != port). The datapath rewrites only the addresses of SCTP packets: a port change
// would need the CRC32c recomputed over the whole packet, which no BPF helper does. It refuses
// such connections like a frontend without backends (NO_SERVICE_BACKEND, ICMP port unreachable),
// which would otherwise show only as a drop counter. The frontends are programmed unchanged: the
// backends on p's own port still serve. The message names only ports, so it stays the same while
// the endpoints come and go (the reconciler reports each distinct message once).
func (m *model) warnSCTPTargetPorts(i int, p api.ServicePort, backends []Backend) {
	other := map[uint16]bool{}
	for _, b := range backends {
		if b.Port != uint16(p.Port) {
			other[b.Port] = true
		}
	}
	if len(other) == 0 {
		return
	}
	var names []string
	for _, port := range slices.Sorted(maps.Keys(other)) {
		names = append(names, strconv.Itoa(int(port)))
	}
	noun := "port"
	if len(names) > 1 {
		noun = "ports"
	}
	m.warn(ReasonUnsupportedSCTPTargetPort,
		"spec.ports[%d] (%q): SCTP port %d has endpoints on %s %s; edgeplane cannot change the port of an SCTP packet "+
			"(its CRC32c would need recomputing), so connections to those endpoints are refused: make targetPort %d",
		i, p.Name, p.Port, noun, strings.Join(names, ", "), p.Port)
}

// add adds an open frontend with backends (sorted, capped) and the count of those left out as
// unreachable.
func (m *model) add(key FrontendKey, flags Flags, backends []Backend, unreachable int) {
	f := Frontend{Flags: flags, Unreachable: uint16(min(unreachable, MaxBackends))}
	if flags&FlagAffinity != 0 {
		f.AffinityTimeout = affinityTimeout(m.in.Service)
	}
	if len(backends) > m.max {
		m.warn(ReasonTooManyEndpoints, "frontend %s has %d endpoints; the datapath holds %d per frontend, the first %d by address are used",
			key, len(backends), m.max, m.max)
		backends = backends[:m.max]
	}
	f.Backends = backends
	m.addFrontend(key, f)
}

func (m *model) addFrontend(key FrontendKey, f Frontend) {
	if _, dup := m.res.Frontends[key]; dup {
		m.warn(ReasonInvalidService, "frontend %s is listed twice; the first is used", key)
		return
	}
	m.res.Frontends[key] = f
}

func commonFlags(svc *api.Service) Flags {
	if svc.Spec.SessionAffinity == api.ServiceAffinityClientIP {
		return FlagAffinity
	}
	return 0
}

func affinityTimeout(svc *api.Service) uint32 {
	c := svc.Spec.SessionAffinityConfig
	if c == nil || c.ClientIP == nil || c.ClientIP.TimeoutSeconds == nil || *c.ClientIP.TimeoutSeconds <= 0 {
		return DefaultAffinityTimeout
	}
	return uint32(*c.ClientIP.TimeoutSeconds)
}

// clusterIPv4 is the Service's IPv4 ClusterIP; ok is false for an IPv6-only Service.
func clusterIPv4(svc *api.Service) (netip.Addr, bool, error) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	if len(ips) == 0 {
		return netip.Addr{}, false, fmt.Errorf("spec.clusterIP is not set")
	}
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, false, fmt.Errorf("spec.clusterIP %q is not an IP address", s)
		}
		if ip.Is4() {
			return ip, true, nil
		}
	}
	return netip.Addr{}, false, nil
}

// externalIPs are spec.externalIPs and, for a LoadBalancer Service, its ingress IPs (not those
// whose ipMode is Proxy: the load balancer proxies, packets arrive for the node), IPv4, sorted.
func (m *model) externalIPs() []netip.Addr {
	svc := m.in.Service
	seen := map[netip.Addr]bool{}
	for i, s := range svc.Spec.ExternalIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			m.warn(ReasonInvalidService, "spec.externalIPs[%d] %q is not an IP address; left out", i, s)
			continue
		}
		if ip.Is4() && !ip.IsUnspecified() {
			seen[ip] = true
		}
	}
	if svc.Spec.Type == api.ServiceTypeLoadBalancer {
		for i, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == api.LoadBalancerIPModeProxy) {
				continue
			}
			ip, err := netip.ParseAddr(ing.IP)
			if err != nil {
				m.warn(ReasonInvalidService, "status.loadBalancer.ingress[%d].ip %q is not an IP address; left out", i, ing.IP)
				continue
			}
			if ip.Is4() && !ip.IsUnspecified() {
				seen[ip] = true
			}
		}
	}
	return slices.SortedFunc(maps.Keys(seen), netip.Addr.Compare)
}

func protoOf(p api.Protocol) (Proto, error) {
	switch p {
	case api.ProtocolTCP, "":
		return ProtoTCP, nil
	case api.ProtocolUDP:
		return ProtoUDP, nil
	case api.ProtocolSCTP:
		return ProtoSCTP, nil
	}
	return 0, fmt.Errorf("protocol %q is not TCP, UDP or SCTP", p)
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
