package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// The route-mode groups (issue 16) measure edgeplane's route mode (docs/domains.md "Route mode"):
// site-a of the lab is a route-mode domain whose gateway is the lab's router running bird2
// (tests/lab gateway.go), the BGP peer that route mode requires; its nodes advertise their pod
// CIDRs to it. Two nodes share site-a's first L2 segment (pods' packets go node to node,
// unencapsulated), a third is on its second segment, behind the gateway (pods' packets go to the
// gateway, which routes them on by the pod CIDR it learned over BGP).

// routeBenchConfig is the domain ConfigMap: site-a in route mode, every node speaking to the
// gateway's address on its own segment. Nothing else is configured: the cloud nodes of the other
// groups keep the default domain and VXLAN.
var routeBenchConfig = fmt.Sprintf(`domains:
  site-a:
    pools: [site-a]
    encapsulation: route
    bgp:
      localASN: %[1]d
      peers:
      - address: %[2]s
        peerASN: %[3]d
        nodeSelector:
          matchLabels: {%[5]s: "1"}
      - address: %[4]s
        peerASN: %[3]d
        nodeSelector:
          matchLabels: {%[5]s: "2"}
`, lab.NodeASN, lab.SegmentRouterIP(1), lab.GatewayASN, lab.SegmentRouterIP(2), routeSegmentLabel)

// routeSegmentLabel says which segment a route-mode node is on, so which gateway address it peers with.
const routeSegmentLabel = "topology.edgeplane.io/segment"

// routeSite is the route-mode part of the bench lab.
type routeSite struct {
	gateway *lab.Gateway
	// nodes[0] and nodes[1] share site-a's first segment, nodes[2] is on the second one; nodes[3]
	// and nodes[4] are on the first too, with BIG TCP (--ipv4-big-tcp, docs/domains.md).
	nodes []*lab.Node
	// pods[i] runs on nodes[i].
	pods []*lab.Pod
}

// routeBigTCPSize is BIG TCP's IPv4 GSO/GRO size, which the agent gives the NIC and the CNI
// plugin the pods of nodes[3] and nodes[4] (netdev.BigTCPv4Size).
const routeBigTCPSize = 196608

// setupRouteSite starts the gateway, puts site-a in route mode and adds its five nodes (lab
// indices first to first+4) with a pod each, the last two with BIG TCP (their switch ports raised
// to match, as a NIC's TSO would leave their packets to the wire); it returns once the gateway
// has learned the pod CIDRs with the nodes as next hops and the BIG TCP nodes and pods have the
// size.
func setupRouteSite(ctx context.Context, l *lab.Lab, first int) (*routeSite, error) {
	g, err := l.StartGateway(ctx, lab.GatewayOptions{})
	if err != nil {
		return nil, err
	}
	// The configuration first: the agents start in route mode.
	cms := l.Client.CoreV1().ConfigMaps(lab.AgentNamespace)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-domains", Namespace: lab.AgentNamespace},
		Data:       map[string]string{domain.ConfigKey: routeBenchConfig},
	}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("creating the domain ConfigMap: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("updating the domain ConfigMap: %w", err)
	}
	s := &routeSite{gateway: g}
	for i, segment := range []int{1, 1, 2, 1, 1} {
		var args []string
		big := i >= 3
		if big {
			args = []string{"--ipv4-big-tcp"}
		}
		n, err := l.AddNode(ctx, fmt.Sprintf("route-%d", i+1), first+i, lab.NodeOptions{
			Domain:    lab.DomainSiteA,
			Segment:   segment,
			Labels:    map[string]string{domain.DefaultPoolLabel: lab.DomainSiteA, routeSegmentLabel: fmt.Sprint(segment)},
			AgentArgs: args,
		})
		if err != nil {
			return nil, err
		}
		if big {
			if err := l.SetSwitchPortGSOIPv4(n, routeBigTCPSize); err != nil {
				return nil, err
			}
		}
		p, err := l.AddPod(ctx, n, fmt.Sprintf("bench-r%d", i+1), lab.PodOptions{})
		if err != nil {
			return nil, err
		}
		s.nodes, s.pods = append(s.nodes, n), append(s.pods, p)
	}
	_, took, err := g.WaitRoutes(ctx, 60*time.Second, func(r map[netip.Prefix]lab.GatewayRoute) bool {
		for _, n := range s.nodes {
			if r[n.PodCIDR].NextHop != n.IP {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("the gateway did not learn the route-mode nodes' pod CIDRs: %w", err)
	}
	l.Logf("route-mode site: the gateway learned %d pod CIDRs in %v", len(s.nodes), took.Round(time.Millisecond))
	// The BIG TCP path must be what it says: the NICs and the pods' eth0 took the size.
	for i := 3; i < len(s.nodes); i++ {
		for _, link := range []struct {
			ns   lab.Netns
			what string
		}{{s.nodes[i].Netns, s.nodes[i].Name + "'s NIC"}, {s.pods[i].Netns, s.pods[i].Name + "'s eth0"}} {
			if gso, gro, err := link.ns.LinkGSOIPv4("eth0"); err != nil || gso != routeBigTCPSize || gro != routeBigTCPSize {
				return nil, fmt.Errorf("%s: gso/gro_ipv4_max_size %d/%d, %v; want %d (BIG TCP)", link.what, gso, gro, err, routeBigTCPSize)
			}
		}
	}
	// A node's peers send to it unencapsulated only once its speaker has a session up and says so
	// on its Node (docs/domains.md "Switching a domain's encapsulation"): until then, VXLAN.
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range s.nodes {
		for {
			node, err := l.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err == nil && node.Annotations[k8s.RoutesAdvertisedAnnotation] == lab.DomainSiteA {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%s never announced its routes advertised (%s): %v", n.Name, k8s.RoutesAdvertisedAnnotation, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return s, nil
}

// checkWire proves how pod traffic from pod from to pod to crosses to's node NIC: unencapsulated
// (plain IPv4 between the pods' addresses, no VXLAN frame carrying them: otherwise a route-mode
// path would measure the overlay) or, with vxlanWanted, in VXLAN frames only (the overlay path
// of the same group, which also shows that the check sees VXLAN). It pings through the path
// while capturing there.
func checkWire(from, to *lab.Pod, toNode *lab.Node, vxlanWanted bool) error {
	c, err := lab.StartCapture(toNode.Netns, "eth0")
	if err != nil {
		return err
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		var last error
		for i := 0; i < 5; i++ {
			if _, err := lab.Ping(from.Netns, to.IP, time.Second); err != nil {
				last = err
			}
			time.Sleep(50 * time.Millisecond)
		}
		done <- last
	}()
	// Capture while the pings run, however long a busy machine makes them, and 100 ms more.
	var pingErr error
	var plain, vxlan int
	for end := time.Now().Add(time.Hour); time.Now().Before(end); {
		select {
		case pingErr = <-done:
			end = time.Now().Add(100 * time.Millisecond)
		default:
		}
		frame, err := c.Next(100 * time.Millisecond)
		if err != nil || len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IP {
			continue
		}
		between := func(src, dst netip.Addr) bool {
			return src == from.IP && dst == to.IP || src == to.IP && dst == from.IP
		}
		if f, ok := lab.ParseVXLAN(frame, 8472); ok {
			if between(f.InnerSrc, f.InnerDst) {
				vxlan++
			}
			continue
		}
		ip := frame[14:]
		if between(netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))) {
			plain++
		}
	}
	if pingErr != nil {
		return fmt.Errorf("%s -> %s: %w", from.Name, to.Name, pingErr)
	}
	switch {
	case vxlanWanted && (vxlan == 0 || plain != 0):
		return fmt.Errorf("%s -> %s on %s's NIC: %d plain pod-to-pod packets, %d VXLAN frames; want VXLAN only",
			from.Name, to.Name, toNode.Name, plain, vxlan)
	case !vxlanWanted && (plain == 0 || vxlan != 0):
		return fmt.Errorf("%s -> %s on %s's NIC: %d plain pod-to-pod packets, %d VXLAN frames; want plain ones only",
			from.Name, to.Name, toNode.Name, plain, vxlan)
	}
	return nil
}
