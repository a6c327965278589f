package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/maps/nodes"
	"github.com/edgeplane/edgeplane/pkg/maps/nonmasq"
	"github.com/edgeplane/edgeplane/pkg/maps/routes"
)

// Verdicts of route get.
const (
	verdictLocal  = "deliver-local" // peer redirect into a local pod
	verdictVXLAN  = "vxlan"         // encapsulated toward the owning node
	verdictDirect = "direct"        // routed unencapsulated toward the owning node
	verdictHost   = "host"          // handed to the host stack (outside the cluster)
	verdictDrop   = "drop"
)

// vxlanPort is Flannel's VXLAN port (bpf/lib/common.h VXLAN_PORT).
const vxlanPort = 8472

// routeGetResult explains pod_egress's decision for one destination (JSON schema in docs/cli.md).
type routeGetResult struct {
	Destination string           `json:"destination"`
	Source      string           `json:"source"` // --from; "" means any local pod
	Verdict     string           `json:"verdict"`
	DropReason  string           `json:"dropReason"`  // set when verdict is "drop"
	ICMP        string           `json:"icmp"`        // the error the pod gets back: icmpHostUnreachable or ""
	Endpoint    *endpointInfo    `json:"endpoint"`    // the local pod (deliver-local)
	Route       *routeInfo       `json:"route"`       // the longest-prefix match in routes_map
	DomainCheck *domainCheckInfo `json:"domainCheck"` // domain_reachable() for a remote route
	Node        *nodeInfo        `json:"node"`        // nodes_map's entry for the route's node
	VXLAN       *vxlanInfo       `json:"vxlan"`       // how the packet is encapsulated (vxlan)
	Redirect    *redirectInfo    `json:"redirect"`    // where the program sends the frame
	Masquerade  *masqueradeInfo  `json:"masquerade"`  // what node_egress does with it (host)
	Steps       []routeStep      `json:"steps"`       // the lookups in pod_egress's order
}

// icmpHostUnreachable: pod_egress answers a DOMAIN_UNREACHABLE drop with ICMP destination
// unreachable, code host unreachable, from the node IP (tc_exit_host_unreach, bpf/lib/icmp.h).
const icmpHostUnreachable = "host-unreachable"

// connUnchecked: domains_map is not pinned, so route get cannot tell (see domainCheckInfo).
const connUnchecked = "unchecked"

// domainCheckInfo is domain_reachable() (bpf/lib/domains.h) for the route's domain.
type domainCheckInfo struct {
	Domain         uint32 `json:"domain"` // the route's domain
	DomainName     string `json:"domainName"`
	NodeDomain     uint32 `json:"nodeDomain"` // this node's (node_cfg_map)
	NodeDomainName string `json:"nodeDomainName"`
	// Connectivity is connLocal (same domain, no lookup), connPrivate, connPublic (drop), or
	// connUnchecked when domains_map is not pinned (an agent older than network domains, whose
	// datapath does not check them).
	Connectivity string `json:"connectivity"`
	InDomainsMap bool   `json:"inDomainsMap"` // false: the route's domain has no entry (public)
}

type routeStep struct {
	Step   string `json:"step"`
	Result string `json:"result"`
}

type vxlanInfo struct {
	Mode        string `json:"mode"` // "native" (encapsulated in BPF) or "device" (tunnel key + collect_md device)
	OuterSrc    string `json:"outerSrc"`
	OuterDst    string `json:"outerDst"`
	UDPPort     uint16 `json:"udpPort"`
	VNI         uint32 `json:"vni"`
	InnerSrcMAC string `json:"innerSrcMAC"`
	InnerDstMAC string `json:"innerDstMAC"`
	MTU         uint16 `json:"mtu"` // longer packets with DF: PKT_TOO_BIG + ICMP; without DF: host stack fragments
}

type redirectInfo struct {
	Helper    string `json:"helper"` // bpf_redirect_peer, bpf_redirect or bpf_redirect_neigh
	Ifindex   uint32 `json:"ifindex"`
	Interface string `json:"interface"`
	DstMAC    string `json:"dstMAC"` // "" when the kernel resolves the next hop (bpf_redirect_neigh)
	SrcMAC    string `json:"srcMAC"`
}

func newRouteCommand(e *env) *cobra.Command {
	route := &cobra.Command{
		Use:   "route",
		Short: "Explain forwarding decisions",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var from string
	get := &cobra.Command{
		Use:   "get <ip>",
		Short: "Explain the path pod_egress gives a packet from a local pod to <ip>",
		Long: "route get replays bpf/pod.c's lookups on the pinned maps: local endpoint, routes_map,\n" +
			"domains_map, nodes_map, node_cfg_map, and for traffic leaving the cluster nonmasq_map.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("route get takes one IPv4 address, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			dst, err := parseIPv4(args[0])
			if err != nil {
				return err
			}
			var src netip.Addr
			if from != "" {
				if src, err = parseIPv4(from); err != nil {
					return err
				}
			}
			res, err := e.routeGet(src, dst)
			if err != nil {
				return err
			}
			return e.print(res, func(w io.Writer) { routeGetTable(w, res) })
		},
	}
	get.Flags().StringVar(&from, "from", "", "source pod IPv4 (checked like pod_egress's anti-spoofing); default any local pod")
	route.AddCommand(get)
	return route
}

func parseIPv4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Unmap().Is4() {
		return netip.Addr{}, usagef("%q is not an IPv4 address", s)
	}
	return a.Unmap(), nil
}

// routeMaps are the maps pod_egress reads (node_cfg_map's one entry read once).
type routeMaps struct {
	cfg     nodecfg.NodeCfg
	eps     *endpoints.Map
	routes  *routes.Map
	nodes   *nodes.Map
	nonmasq *nonmasq.Map
	domains *domainNames // read whole: the CLI names every domain it shows
}

// openRouteMaps opens the maps route get reads; on error it closes what it opened.
func (e *env) openRouteMaps() (_ *routeMaps, err error) {
	rm := &routeMaps{}
	defer func() {
		if err != nil {
			rm.Close()
		}
	}()
	if rm.cfg, err = e.readNodeCfg(); err != nil {
		return nil, err
	}
	if rm.eps, err = open(e, endpoints.MapName, endpoints.Open); err != nil {
		return nil, err
	}
	if rm.routes, err = open(e, routes.MapName, routes.Open); err != nil {
		return nil, err
	}
	if rm.nodes, err = open(e, nodes.MapName, nodes.Open); err != nil {
		return nil, err
	}
	if rm.nonmasq, err = open(e, nonmasq.MapName, nonmasq.Open); err != nil {
		return nil, err
	}
	if rm.domains, err = e.readDomainNames(); err != nil {
		return nil, err
	}
	return rm, nil
}

func (rm *routeMaps) Close() {
	if rm.eps != nil {
		rm.eps.Close()
	}
	if rm.routes != nil {
		rm.routes.Close()
	}
	if rm.nodes != nil {
		rm.nodes.Close()
	}
	if rm.nonmasq != nil {
		rm.nonmasq.Close()
	}
}

// routeGet follows pod_egress (bpf/pod.c) step by step. Keep the two in the same order.
func (e *env) routeGet(src, dst netip.Addr) (*routeGetResult, error) {
	rm, err := e.openRouteMaps()
	if err != nil {
		return nil, err
	}
	defer rm.Close()
	res := &routeGetResult{Destination: dst.String(), Steps: []routeStep{}}
	if src.IsValid() {
		res.Source = src.String()
	}
	step := func(name, format string, args ...any) {
		res.Steps = append(res.Steps, routeStep{name, fmt.Sprintf(format, args...)})
	}
	drop := func(reason dropreason.Reason) (*routeGetResult, error) {
		res.Verdict, res.DropReason = verdictDrop, reason.String()
		return res, nil
	}

	// node_cfg_get(): the pod program fails closed until the agent is done.
	cfg := rm.cfg
	if cfg.Flags&nodecfg.FlagReady == 0 {
		step(nodecfg.MapName, "not ready: the agent has not programmed this node")
		return drop(dropreason.NotReady)
	}
	step(nodecfg.MapName, "ready: node %s, pod CIDR %s, cluster CIDR %s",
		cfg.NodeIP, prefixString(cfg.PodPrefix(), cfg.PodCIDR, cfg.PodMask), prefixString(cfg.ClusterPrefix(), cfg.ClusterCIDR, cfg.ClusterMask))

	// Anti-spoofing: the source must be a local endpoint (sending through its own veth).
	if src.IsValid() {
		ep, err := lookupEndpoint(rm.eps, src)
		if err != nil {
			return nil, err
		}
		if ep == nil {
			step("source", "%s is not a local endpoint", src)
			return drop(dropreason.SpoofedSource)
		}
		from := e.endpointInfo(src, *ep)
		step("source", "%s is %s on %s", src, podPhrase(&from), ifCell(from.Ifindex, from.Interface))
	}

	// A local destination: peer redirect into its veth.
	ep, err := lookupEndpoint(rm.eps, dst)
	if err != nil {
		return nil, err
	}
	if ep != nil {
		info := e.endpointInfo(dst, *ep)
		res.Endpoint = &info
		step(endpoints.MapName, "%s is %s on %s", dst, podPhrase(&info), ifCell(ep.Ifindex, info.Interface))
		res.Verdict = verdictLocal
		res.Redirect = &redirectInfo{Helper: "bpf_redirect_peer", Ifindex: ep.Ifindex, Interface: info.Interface,
			DstMAC: info.PodMAC, SrcMAC: info.HostMAC}
		return res, nil
	}
	step(endpoints.MapName, "%s is not a local pod", dst)

	prefix, route, err := rm.routes.Match(dst)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		if cfg.ClusterPrefix().Contains(dst) {
			step(routes.MapName, "no route, and %s is inside the cluster CIDR %s", dst, cfg.ClusterPrefix())
			return drop(dropreason.NoRoute)
		}
		step(routes.MapName, "no route: %s is outside the cluster CIDR %s", dst, cfg.ClusterPrefix())
		res.Verdict = verdictHost
		masq, err := e.masquerade(rm, cfg, src, dst)
		if err != nil {
			return nil, err
		}
		res.Masquerade = masq
		step("masquerade", "%s", masqueradeSentence(masq))
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	ri := describeRoute(e.localNodeIP(), rm.domains, e.nodes(), prefix, route)
	res.Route = &ri
	if route.Flags&routes.FlagLocal != 0 {
		step(routes.MapName, "%s is this node's pod CIDR, and no pod has %s", prefix, dst)
		return drop(dropreason.UnknownEndpoint)
	}
	owner := ri.NodeIP
	if ri.NodeName != "" {
		owner = ri.NodeName + " at " + owner
	}
	step(routes.MapName, "%s -> node %s (%s, %sdomain %s)", prefix, owner, ri.Encap, poolPhrase(ri.Pool), rm.domains.label(route.Domain))

	// domain_reachable(): the same domain, or one a private line joins to it in domains_map.
	dc := checkDomain(rm.domains, cfg.Domain, route.Domain)
	res.DomainCheck = dc
	dom, nodeDom := orID(dc.DomainName, dc.Domain), orID(dc.NodeDomainName, dc.NodeDomain)
	switch dc.Connectivity {
	case connLocal:
		step("domain", "%s is this node's domain", dom)
	case connPrivate:
		step(domainsmap.MapName, "crosses the private line to domain %s from this node's domain %s", dom, nodeDom)
	case connUnchecked:
		step(domainsmap.MapName, "not pinned: domain %s not checked (an agent older than this edgeplanectl, whose datapath does not check domains)", dom)
	default:
		if dc.InDomainsMap {
			step(domainsmap.MapName, "domain %s has public connectivity to this node's domain %s", dom, nodeDom)
		} else {
			step(domainsmap.MapName, "no entry for domain %s: public to this node's domain %s (the default between domains)", dom, nodeDom)
		}
		res.ICMP = icmpHostUnreachable
		step("icmp", "host unreachable from %s back into the pod (counted as ICMP_SENT), so its connect() fails at once", cfg.NodeIP)
		return drop(dropreason.DomainUnreachable)
	}

	node, err := rm.nodes.Lookup(route.NodeIP.Addr())
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		step(nodes.MapName, "no entry for node %s", nodePhrase(ri.NodeIP, ri.NodeName))
		return drop(dropreason.UnknownNode)
	}
	if err != nil {
		return nil, err
	}
	ni := describeNode(rm.domains, e.nodes(), route.NodeIP.Addr(), node)
	res.Node = &ni
	step(nodes.MapName, "%s: VTEP MAC %s, next hop %s", route.NodeIP, ni.VtepMAC, nexthopSentence(ni))

	underlay := e.ifNames.name(cfg.UnderlayIfindex)
	toUnderlay := func(r *redirectInfo) {
		r.Ifindex, r.Interface = cfg.UnderlayIfindex, underlay
		if ni.NexthopValid {
			r.Helper, r.DstMAC, r.SrcMAC = "bpf_redirect", ni.NexthopMAC, maps.MAC(cfg.UnderlayMAC)
		} else {
			r.Helper = "bpf_redirect_neigh"
		}
	}
	if route.Encap == routes.EncapDirect {
		res.Verdict = verdictDirect
		res.Redirect = &redirectInfo{}
		toUnderlay(res.Redirect)
		step("direct", "unencapsulated to %s via %s", route.NodeIP, ifCell(cfg.UnderlayIfindex, underlay))
		step("mtu", "longer than %s's MTU with DF: dropped (PKT_TOO_BIG) and answered with ICMP fragmentation needed; without DF: host stack", orDash(underlay))
		return res, nil
	}

	res.Verdict = verdictVXLAN
	res.VXLAN = &vxlanInfo{
		Mode: encapModeName(cfg.EncapMode), OuterSrc: cfg.NodeIP.String(), OuterDst: route.NodeIP.String(),
		UDPPort: vxlanPort, VNI: cfg.VNI, InnerSrcMAC: maps.MAC(cfg.VtepMAC), InnerDstMAC: ni.VtepMAC, MTU: cfg.MTU,
	}
	if cfg.EncapMode == nodecfg.EncapDevice {
		vx := e.ifNames.name(cfg.VxlanIfindex)
		res.Redirect = &redirectInfo{Helper: "bpf_redirect", Ifindex: cfg.VxlanIfindex, Interface: vx}
		step("vxlan", "device mode: tunnel key remote %s VNI %d, inner MACs %s -> %s, redirected to %s",
			route.NodeIP, cfg.VNI, res.VXLAN.InnerSrcMAC, res.VXLAN.InnerDstMAC, ifCell(cfg.VxlanIfindex, vx))
	} else {
		res.Redirect = &redirectInfo{}
		toUnderlay(res.Redirect)
		step("vxlan", "native mode: outer %s -> %s UDP %d VNI %d, inner MACs %s -> %s, redirected to %s",
			cfg.NodeIP, route.NodeIP, vxlanPort, cfg.VNI, res.VXLAN.InnerSrcMAC, res.VXLAN.InnerDstMAC,
			ifCell(cfg.UnderlayIfindex, underlay))
	}
	step("mtu", "longer than %d bytes with DF: dropped (PKT_TOO_BIG) and answered with ICMP fragmentation needed; without DF: host stack fragments", cfg.MTU)
	return res, nil
}

// checkDomain mirrors domain_reachable(): a domain missing from domains_map is unreachable.
func checkDomain(names *domainNames, nodeDomain, id uint32) *domainCheckInfo {
	d, known := names.byID[id]
	dc := &domainCheckInfo{Domain: id, DomainName: d.NameString(), NodeDomain: nodeDomain,
		NodeDomainName: names.name(nodeDomain), InDomainsMap: known}
	switch {
	case id == nodeDomain:
		dc.Connectivity = connLocal
	case !names.pinned:
		dc.Connectivity = connUnchecked
	case known && d.Reachable():
		dc.Connectivity = connPrivate
	default:
		dc.Connectivity = connPublic
	}
	return dc
}

func lookupEndpoint(m *endpoints.Map, ip netip.Addr) (*endpoints.Endpoint, error) {
	ep, err := m.Lookup(ip)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &ep, nil
}
