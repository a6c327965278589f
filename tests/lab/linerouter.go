package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// The private line's router and a Terway-like cloud pool (docs/domains.md, "Route mode"; issue
// 16). In Alibaba's model a site's gateway reaches the cloud VPC over a private line (Express
// Connect) whose cloud end, the VBR, learns the site's prefixes over BGP and gives them to the
// VPC's router; hosts of the VPC, among them the pods of a pool whose CNI hands out VPC addresses
// (Terway), then reach the site's pods by routing alone. The lab folds the VBR and the VPC router
// into one namespace, the line router:
//
//   - legs "cloud" at LineRouterCloudIP on the cloud bridge and "site-a" at LineRouterSiteIP on
//     site-a's first segment (where the site's gateway, the lab's router, has its leg);
//   - bird2 (StartLineRouter: the same Bird as the gateway's) with one eBGP session, AS
//     LineRouterASN, to the gateway (a neighbour the gateway gets through AddPeer): it imports the
//     site's pod CIDRs into its main table and exports the VPC's pod subnet (TerwayPodNet, a static
//     route to the Terway node), which the gateway installs in its own table: pods of site-a
//     answer through it;
//   - the gateway forwards between two hosts of one segment (a site-a node and the line router),
//     as a site router does: StartLineRouter adds that accept to the router's FORWARD chain.
//
// The edgeplane nodes' own cross-domain traffic does not use the line router: it stays VXLAN
// between node addresses over the lab's private line (domains.go).

// The line router's addresses and AS, and the VPC subnet the Terway-like pool's pods get their
// addresses from (a vSwitch of the cloud VPC next to the nodes' UnderlayNet).
var (
	LineRouterCloudIP = cloudDomain.host(250)
	LineRouterSiteIP  = domain{DomainSiteA, SiteANet, ""}.host(250)
	TerwayNodeIP      = cloudDomain.host(240)
	TerwayPodNet      = netip.MustParsePrefix("172.30.8.0/24")
)

// LineRouterASN is the line router's AS; LineRouterGatewaySession its BGP session with the site
// gateway (the protocol of the routes it learned there).
const (
	LineRouterASN            = 65100
	LineRouterGatewaySession = "site_gateway"
)

// LineRouter is the private line's router with its bird (BGP to the site gateway).
type LineRouter struct {
	Netns Netns
	*Bird
}

// StartLineRouter builds the line router, starts its bird and peers it with the running gateway
// (StartGateway first); the session comes up in the background (WaitRoutes on either side).
func (l *Lab) StartLineRouter(ctx context.Context) (*LineRouter, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	l.netMu.Lock()
	g := l.gateway
	l.netMu.Unlock()
	if g == nil {
		return nil, errors.New("the line router peers with the site gateway: StartGateway first")
	}
	ns, err := l.addNetns(ctx, "line")
	if err != nil {
		return nil, err
	}
	if err := ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	siteA, _ := lookupDomain(DomainSiteA)
	if err := l.plug(ctx, ns, DomainCloud, "ln-"+DomainCloud, LineRouterCloudIP, cloudDomain); err != nil {
		return nil, err
	}
	if err := l.plug(ctx, ns, DomainSiteA, "ln-"+DomainSiteA, LineRouterSiteIP, siteA); err != nil {
		return nil, err
	}
	rules := fmt.Sprintf("*filter\n-I FORWARD -i %[1]s -o %[1]s -j ACCEPT\nCOMMIT\n", DomainSiteA)
	if _, err := l.router.execInput(ctx, rules, "iptables-restore", "-w", "10", "--noflush"); err != nil {
		return nil, fmt.Errorf("router rule within site-a's segment: %w", err)
	}
	toGateway := BirdPeer{
		Name: LineRouterGatewaySession, Local: LineRouterSiteIP, LocalASN: LineRouterASN, Address: RouterIP(DomainSiteA), ASN: g.ASN,
		Import: podCIDRsFilter,
		Export: fmt.Sprintf("if net = %s then accept; reject;", TerwayPodNet),
	}
	dir := filepath.Join(l.Dir, "line")
	var conf strings.Builder
	fmt.Fprintf(&conf, "log %q all;\nrouter id %s;\nprotocol device {}\n", filepath.Join(dir, "bird.log"), LineRouterSiteIP)
	conf.WriteString("protocol kernel { ipv4 { import none; export all; }; }\n")
	fmt.Fprintf(&conf, "protocol static vpc { ipv4; route %s via %s; }\n", TerwayPodNet, TerwayNodeIP)
	conf.WriteString(toGateway.config())
	b, err := l.startBird(ctx, "line", ns, dir, conf.String())
	if err != nil {
		return nil, err
	}
	if err := g.AddPeer(ctx, BirdPeer{
		Name: "private_line", Local: RouterIP(DomainSiteA), LocalASN: g.ASN, Address: LineRouterSiteIP, ASN: LineRouterASN,
		Import: toGateway.Export, Export: podCIDRsFilter,
	}); err != nil {
		return nil, err
	}
	l.Logf("lab %s: line router %s up (bird AS%d), cloud leg %s, site-a leg %s", l.ID, ns, LineRouterASN, LineRouterCloudIP, LineRouterSiteIP)
	return &LineRouter{Netns: ns, Bird: b}, nil
}

// TerwayNode is a cloud host without edgeplane whose pods are plain veths with addresses from
// TerwayPodNet, routed by its kernel (a /32 per pod; the pods' gateway is a link-local address
// the node answers ARP for), its default route to its VPC router, the line router.
type TerwayNode struct {
	Netns Netns
	IP    netip.Addr
	lab   *Lab
	pods  int
}

// TerwayPod is one of a TerwayNode's pods.
type TerwayPod struct {
	Netns Netns
	IP    netip.Addr
}

// TerwayPodGateway is the Terway pods' default gateway, on the node's end of each pod's veth: the
// node's first hop in a pod's traceroute.
var TerwayPodGateway = netip.MustParseAddr("169.254.1.1")

// AddTerwayNode plugs the Terway-like node into the cloud bridge at TerwayNodeIP (StartLineRouter
// first: its VPC router).
func (l *Lab) AddTerwayNode(ctx context.Context) (*TerwayNode, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	ns, err := l.addNetns(ctx, "tw")
	if err != nil {
		return nil, err
	}
	if err := ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	if err := l.attach(ctx, ns, "tw-eth0", TerwayNodeIP); err != nil {
		return nil, err
	}
	if _, err := ns.IP(ctx, "route", "add", "default", "via", LineRouterCloudIP.String(), "dev", "eth0"); err != nil {
		return nil, err
	}
	return &TerwayNode{Netns: ns, IP: TerwayNodeIP, lab: l}, nil
}

// AddPod gives the node a pod: a netns with eth0 at the next address of TerwayPodNet (.2 on).
func (n *TerwayNode) AddPod(ctx context.Context) (*TerwayPod, error) {
	n.pods++
	addr := TerwayPodNet.Addr()
	for range n.pods + 1 {
		addr = addr.Next()
	}
	ns, err := n.lab.addNetns(ctx, fmt.Sprintf("twp%d", n.pods))
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("twp%d", n.pods)
	steps := []struct {
		ns   Netns
		args []string
	}{
		{n.Netns, []string{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns.Name()}},
		{n.Netns, []string{"addr", "add", TerwayPodGateway.String() + "/32", "dev", host}},
		{n.Netns, []string{"link", "set", host, "up"}},
		{n.Netns, []string{"route", "add", addr.String() + "/32", "dev", host}},
		{ns, []string{"addr", "add", addr.String() + "/32", "dev", "eth0"}},
		{ns, []string{"link", "set", "eth0", "up"}},
		{ns, []string{"link", "set", "lo", "up"}},
		{ns, []string{"route", "add", TerwayPodGateway.String(), "dev", "eth0", "scope", "link"}},
		{ns, []string{"route", "add", "default", "via", TerwayPodGateway.String(), "dev", "eth0"}},
	}
	for _, s := range steps {
		if _, err := s.ns.IP(ctx, s.args...); err != nil {
			return nil, err
		}
	}
	return &TerwayPod{Netns: ns, IP: addr}, nil
}
