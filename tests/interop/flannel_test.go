package interop

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	echoPort = 8080
	sinkPort = 8081
	// A pair that answered once answers at once; the first packets may race convergence.
	reachTimeout = 3 * time.Second
	// How long edgeplane and flanneld get to learn of each other's nodes (informers, annotations).
	convergeTimeout = 30 * time.Second
	flannelDevice   = "flannel.1"
	vxlanPort       = 8472
)

// TestFlannelInterop: two nodes run edgeplane-agent, a third runs real flanneld (vxlan,
// --kube-subnet-mgr) with its pods wired by Flannel's CNI plugin (bridge + host-local), two pods
// per node. Each side learns the other from the flannel.alpha.coreos.com annotations (edgeplane's
// nodes and routes maps; flanneld's FDB, neighbour and route on flannel.1); every ordered pod pair
// pings and exchanges a line over TCP with no NAT in between; between an edgeplane node and the
// Flannel node the wire carries Flannel's VXLAN (UDP 8472, VNI 1, inner MACs = the VTEP MACs) both
// ways; pod MTUs agree; and a bulk TCP transfer crosses both ways.
func TestFlannelInterop(t *testing.T) {
	cfg := lab.ConfigForTest(t)
	flannelBin, err := lab.FlannelBinFromEnv(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := lab.NewForTest(t, cfg, &labs)
	ctx := t.Context()
	start := time.Now()
	var edge []*lab.Node
	for i := 1; i <= 2; i++ {
		n, err := l.AddNode(ctx, fmt.Sprintf("edge%d", i), i, lab.NodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		edge = append(edge, n)
	}
	fl, err := l.AddNode(ctx, "flannel3", 3, lab.NodeOptions{NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	flStart := time.Now()
	flannel, err := l.StartFlannel(ctx, fl, flannelBin)
	if err != nil {
		t.Fatal(err)
	}
	env, err := flannel.SubnetEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flanneld up on %s in %v; subnet.env %v", fl.Name, time.Since(flStart).Round(time.Millisecond), env)
	nodes := []*lab.Node{edge[0], edge[1], fl}
	var pods []*lab.Pod
	for _, n := range nodes {
		for k := 0; k < 2; k++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("pod-%d%c", n.Index, 'a'+k), lab.PodOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, p)
		}
	}
	t.Logf("lab up in %v: %s, %s (edgeplane), %s (flanneld); pods %s", time.Since(start).Round(time.Millisecond),
		edge[0].Name, edge[1].Name, fl.Name, podList(pods))
	if !fl.PodCIDR.Contains(pods[4].IP) || !fl.PodCIDR.Contains(pods[5].IP) {
		t.Fatalf("Flannel pods got %s and %s, outside %s's pod CIDR %s", pods[4].IP, pods[5].IP, fl.Name, fl.PodCIDR)
	}

	vtep := map[string]net.HardwareAddr{}
	t.Run("annotations", func(t *testing.T) {
		for _, n := range nodes {
			mac, err := publishedVTEP(ctx, l, n)
			if err != nil {
				t.Fatal(err)
			}
			vtep[n.Name] = mac
		}
		dev, err := linkMAC(fl.Netns, flannelDevice)
		if err != nil {
			t.Fatal(err)
		}
		if dev.String() != vtep[fl.Name].String() {
			t.Errorf("%s publishes VtepMAC %s, its %s has %s", fl.Name, vtep[fl.Name], flannelDevice, dev)
		}
		details, _ := fl.Netns.IP(ctx, "-d", "link", "show", flannelDevice)
		t.Logf("VTEP MACs %v; %s on %s:\n%s", vtep, flannelDevice, fl.Name, strings.TrimSpace(details))
	})
	if len(vtep) != len(nodes) {
		t.FailNow()
	}

	t.Run("peers", func(t *testing.T) {
		for _, e := range edge {
			took, err := eventually(convergeTimeout, func() error { return flannelKnows(ctx, fl, e, vtep[e.Name]) })
			if err != nil {
				t.Errorf("flanneld on %s: %v", fl.Name, err)
			} else {
				t.Logf("flanneld on %s programmed %s (FDB, neighbour, route) %v after the pods were up", fl.Name, e.Name, took.Round(time.Millisecond))
			}
			took, err = eventually(convergeTimeout, func() error { return edgeplaneKnows(e, fl, vtep[fl.Name]) })
			if err != nil {
				t.Errorf("edgeplane on %s: %v", e.Name, err)
			} else {
				t.Logf("edgeplane on %s has %s in its nodes and routes maps %v after the pods were up", e.Name, fl.Name, took.Round(time.Millisecond))
			}
		}
		fdb, _ := fl.Netns.Exec(ctx, "bridge", "fdb", "show", "dev", flannelDevice)
		t.Logf("%s: bridge fdb show dev %s:\n%s", fl.Name, flannelDevice, strings.TrimSpace(fdb))
		for _, args := range [][]string{{"neigh", "show", "dev", flannelDevice}, {"route", "show"}} {
			out, _ := fl.Netns.IP(ctx, args...)
			t.Logf("%s: ip %s:\n%s", fl.Name, strings.Join(args, " "), strings.TrimSpace(out))
		}
		if out, err := fl.Netns.Exec(ctx, "iptables-save", "-t", "nat"); err == nil {
			t.Logf("%s: flanneld's nat rules:\n%s", fl.Name, grepLines(out, "FLANNEL"))
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("mtu", func(t *testing.T) {
		want := lab.UnderlayMTU - 50
		if env["FLANNEL_MTU"] != fmt.Sprint(want) {
			t.Errorf("flanneld's FLANNEL_MTU=%s, want %d", env["FLANNEL_MTU"], want)
		}
		if mtu, err := fl.Netns.LinkMTU(flannelDevice); err != nil || mtu != want {
			t.Errorf("%s MTU %d (%v), want %d", flannelDevice, mtu, err, want)
		}
		for _, p := range pods {
			if mtu, err := p.Netns.LinkMTU("eth0"); err != nil || mtu != want {
				t.Errorf("%s (on %s) eth0 MTU %d (%v), want %d", p.Name, p.Node.Name, mtu, err, want)
			}
		}
	})

	t.Run("matrix", func(t *testing.T) {
		servers := map[*lab.Pod]*lab.Server{}
		for _, p := range pods {
			s, err := lab.ServeTCPEcho(p.Netns, netip.AddrPortFrom(p.IP, echoPort))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			servers[p] = s
		}
		rtt := map[[2]*lab.Pod]time.Duration{}
		for _, src := range pods {
			for _, dst := range pods {
				if src == dst {
					continue
				}
				d, err := pairCheck(t.Context(), src, dst, servers[dst].Addr)
				if err != nil {
					t.Errorf("%s (%s on %s) -> %s (%s on %s): %v", src.Name, src.IP, src.Node.Name, dst.Name, dst.IP, dst.Node.Name, err)
					continue
				}
				rtt[[2]*lab.Pod{src, dst}] = d
			}
		}
		t.Logf("reachability (ping + TCP echo, server sees the client pod's own address), median ping RTT of 5:\n%s", matrix(pods, rtt))
		t.Logf("median RTT by path:\n%s", rttByPath(pods, rtt))
	})

	t.Run("wire", func(t *testing.T) {
		capture, err := lab.StartCapture(l.Switch, fl.SwitchPort)
		if err != nil {
			t.Fatal(err)
		}
		defer capture.Close()
		for i, e := range edge {
			src, dst := pods[2*i], pods[4+i] // pod-1a -> pod-3a, pod-2a -> pod-3b
			for k := 0; k < 3; k++ {
				if _, err := lab.Ping(src.Netns, dst.IP, time.Second); err != nil {
					t.Fatalf("%s -> %s: %v", src.Name, dst.Name, err)
				}
				if _, err := lab.Ping(dst.Netns, src.IP, time.Second); err != nil {
					t.Fatalf("%s -> %s: %v", dst.Name, src.Name, err)
				}
			}
			seen := map[*lab.Node]outerInfo{}
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) && len(seen) < 2 {
				frame, err := capture.Next(200 * time.Millisecond)
				if err != nil {
					continue
				}
				f, ok := lab.ParseVXLAN(frame, vxlanPort)
				if !ok || f.InnerProto != unix.IPPROTO_ICMP {
					continue
				}
				var from, to *lab.Pod
				switch {
				case f.InnerSrc == src.IP && f.InnerDst == dst.IP:
					from, to = src, dst
				case f.InnerSrc == dst.IP && f.InnerDst == src.IP:
					from, to = dst, src
				default:
					continue
				}
				if f.OuterSrc != from.Node.IP || f.OuterDst != to.Node.IP {
					t.Errorf("%s -> %s: outer %s -> %s, want %s -> %s", from.Name, to.Name, f.OuterSrc, f.OuterDst, from.Node.IP, to.Node.IP)
				}
				if f.Flags != 0x08 || f.VNI != 1 {
					t.Errorf("%s -> %s: VXLAN flags %#x VNI %d, want 0x08 and 1", from.Name, to.Name, f.Flags, f.VNI)
				}
				if f.InnerSrcMAC.String() != vtep[from.Node.Name].String() || f.InnerDstMAC.String() != vtep[to.Node.Name].String() {
					t.Errorf("%s -> %s: inner MACs %s -> %s, want the VTEP MACs %s -> %s", from.Name, to.Name,
						f.InnerSrcMAC, f.InnerDstMAC, vtep[from.Node.Name], vtep[to.Node.Name])
				}
				if _, dup := seen[from.Node]; !dup {
					seen[from.Node] = outer(frame)
					t.Logf("%s (%s) -> %s (%s): UDP %d VNI %d, inner %s -> %s; outer %v", from.Name, from.Node.Name, to.Name, to.Node.Name,
						f.UDPDst, f.VNI, f.InnerSrcMAC, f.InnerDstMAC, seen[from.Node])
				}
			}
			if _, ok := seen[e]; !ok {
				t.Errorf("no VXLAN (UDP %d) frame from %s to %s seen on %s's switch port", vxlanPort, e.Name, fl.Name, fl.Name)
			}
			if _, ok := seen[fl]; !ok {
				t.Errorf("no VXLAN (UDP %d) frame from %s to %s seen on %s's switch port", vxlanPort, fl.Name, e.Name, fl.Name)
			}
		}
	})

	t.Run("bulk", func(t *testing.T) {
		const size = 8 << 20
		for _, pair := range [][2]*lab.Pod{{pods[0], pods[4]}, {pods[4], pods[0]}, {pods[3], pods[5]}, {pods[5], pods[3]}} {
			src, dst := pair[0], pair[1]
			sink, err := lab.ServeTCPSink(dst.Netns, netip.AddrPortFrom(dst.IP, sinkPort))
			if err != nil {
				t.Fatal(err)
			}
			took, err := lab.TCPSend(src.Netns, sink.Addr, size, 30*time.Second)
			sink.Close()
			if err != nil {
				t.Errorf("%s (on %s) -> %s (on %s): %v", src.Name, src.Node.Name, dst.Name, dst.Node.Name, err)
				continue
			}
			t.Logf("%s (on %s) -> %s (on %s): %d MiB in %v (%.0f Mbit/s)", src.Name, src.Node.Name, dst.Name, dst.Node.Name,
				size>>20, took.Round(time.Millisecond), float64(size)*8/took.Seconds()/1e6)
		}
	})
}

// pairCheck waits for src to reach dst by ping, checks a TCP echo whose server sees src's own
// address, and returns the median RTT of five pings.
func pairCheck(ctx context.Context, src, dst *lab.Pod, echo netip.AddrPort) (time.Duration, error) {
	if _, err := lab.WaitPing(ctx, src.Netns, dst.IP, reachTimeout); err != nil {
		return 0, fmt.Errorf("ping: %w", err)
	}
	var seen netip.AddrPort
	if _, err := eventually(reachTimeout, func() error {
		var err error
		seen, err = lab.TCPEcho(src.Netns, echo, time.Second)
		return err
	}); err != nil {
		return 0, fmt.Errorf("tcp: %w", err)
	}
	if seen.Addr() != src.IP {
		return 0, fmt.Errorf("tcp: %s saw the connection from %s, want the pod address %s (no NAT between pods)", dst.Name, seen.Addr(), src.IP)
	}
	var rtts []time.Duration
	for range 5 {
		d, err := lab.Ping(src.Netns, dst.IP, time.Second)
		if err != nil {
			return 0, fmt.Errorf("ping after the first reply: %w", err)
		}
		rtts = append(rtts, d)
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2], nil
}

// matrix renders the reachability matrix: a row per source, a column per destination, the
// median RTT where both ping and TCP worked, FAIL where not.
func matrix(pods []*lab.Pod, rtt map[[2]*lab.Pod]time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-18s", "from \\ to")
	for _, dst := range pods {
		fmt.Fprintf(&b, "%10s", dst.Name)
	}
	b.WriteString("\n")
	for _, src := range pods {
		fmt.Fprintf(&b, "%-18s", src.Name+" ("+src.Node.Name+")")
		for _, dst := range pods {
			cell := "-"
			if src != dst {
				cell = "FAIL"
				if d, ok := rtt[[2]*lab.Pod{src, dst}]; ok {
					cell = fmt.Sprintf("%dus", d.Microseconds())
				}
			}
			fmt.Fprintf(&b, "%10s", cell)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// rttByPath groups the pairs by the kinds of nodes they join and gives each group's median RTT.
func rttByPath(pods []*lab.Pod, rtt map[[2]*lab.Pod]time.Duration) string {
	kind := func(p *lab.Pod) string {
		if p.Node.Agent == nil {
			return "flannel"
		}
		return "edgeplane"
	}
	groups := map[string][]time.Duration{}
	var names []string
	for pair, d := range rtt {
		src, dst := pair[0], pair[1]
		name := kind(src) + " -> " + kind(dst)
		if src.Node == dst.Node {
			name += " (same node)"
		} else {
			name += " (across nodes)"
		}
		if _, ok := groups[name]; !ok {
			names = append(names, name)
		}
		groups[name] = append(groups[name], d)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		ds := groups[name]
		slices.Sort(ds)
		fmt.Fprintf(&b, "  %-40s %3d pairs, median %v, min %v, max %v\n", name, len(ds), ds[len(ds)/2].Round(time.Microsecond),
			ds[0].Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond))
	}
	return b.String()
}

// publishedVTEP reads n's Flannel annotations (backend-type vxlan, VNI 1, public-ip = its
// underlay address) and returns the VTEP MAC they publish.
func publishedVTEP(ctx context.Context, l *lab.Lab, n *lab.Node) (net.HardwareAddr, error) {
	obj, err := l.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var bd struct {
		VNI     int
		VtepMAC string
	}
	raw := obj.Annotations[k8s.BackendDataAnnotation]
	if err := json.Unmarshal([]byte(raw), &bd); err != nil {
		return nil, fmt.Errorf("%s %s annotation %q: %w", n.Name, k8s.BackendDataAnnotation, raw, err)
	}
	if bd.VNI != 1 {
		return nil, fmt.Errorf("%s publishes VNI %d, want 1", n.Name, bd.VNI)
	}
	if got := obj.Annotations[k8s.BackendTypeAnnotation]; got != "vxlan" {
		return nil, fmt.Errorf("%s backend-type %q, want vxlan", n.Name, got)
	}
	if got := obj.Annotations[k8s.PublicIPAnnotation]; got != n.IP.String() {
		return nil, fmt.Errorf("%s public-ip %q, want %s", n.Name, got, n.IP)
	}
	return net.ParseMAC(bd.VtepMAC)
}

// flannelKnows checks what flanneld's vxlan backend programs for peer on fl: an FDB entry from
// the peer's VTEP MAC to its underlay address, a permanent neighbour entry for the peer's VTEP
// address (the first address of its pod CIDR) with that MAC, and a route to its pod CIDR.
func flannelKnows(ctx context.Context, fl, peer *lab.Node, mac net.HardwareAddr) error {
	fdb, err := fl.Netns.Exec(ctx, "bridge", "fdb", "show", "dev", flannelDevice)
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("%s dst %s", mac, peer.IP); !strings.Contains(fdb, want) {
		return fmt.Errorf("no FDB entry %q on %s:\n%s", want, flannelDevice, fdb)
	}
	neigh, err := fl.Netns.IP(ctx, "neigh", "show", "dev", flannelDevice)
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("%s lladdr %s PERMANENT", peer.PodCIDR.Addr(), mac); !strings.Contains(neigh, want) {
		return fmt.Errorf("no neighbour entry %q on %s:\n%s", want, flannelDevice, neigh)
	}
	route, err := fl.Netns.IP(ctx, "route", "show", peer.PodCIDR.String())
	if err != nil {
		return err
	}
	if !strings.Contains(route, "dev "+flannelDevice) {
		return fmt.Errorf("route to %s: %q, want one via %s", peer.PodCIDR, strings.TrimSpace(route), flannelDevice)
	}
	return nil
}

// edgeplaneKnows checks e's datapath maps for fl: a nodes_map entry with fl's VTEP MAC and a
// route from fl's pod CIDR to fl's underlay address.
func edgeplaneKnows(e, fl *lab.Node, mac net.HardwareAddr) error {
	nodes, err := e.RemoteNodes()
	if err != nil {
		return err
	}
	rn, ok := nodes[fl.IP]
	if !ok {
		return fmt.Errorf("no nodes_map entry for %s (%s)", fl.Name, fl.IP)
	}
	if net.HardwareAddr(rn.VTEPMAC[:]).String() != mac.String() {
		return fmt.Errorf("nodes_map has VTEP MAC %s for %s, it publishes %s", net.HardwareAddr(rn.VTEPMAC[:]), fl.Name, mac)
	}
	routes, err := e.Routes()
	if err != nil {
		return err
	}
	r, ok := routes[fl.PodCIDR]
	if !ok || r.NodeIP != fl.IP {
		return fmt.Errorf("routes_map for %s: %+v (present %v), want node %s", fl.PodCIDR, r, ok, fl.IP)
	}
	return nil
}

// outerInfo is what the outer headers of a VXLAN frame say beyond the ports and VNI.
type outerInfo struct {
	SrcPort  uint16
	Checksum bool // UDP checksum filled in (0 means none, allowed over IPv4)
	DF       bool
	TTL      uint8
}

func (o outerInfo) String() string {
	return fmt.Sprintf("UDP source port %d, UDP checksum %v, DF %v, TTL %d", o.SrcPort, o.Checksum, o.DF, o.TTL)
}

// outer reads the outer IPv4/UDP header fields of a frame ParseVXLAN accepted.
func outer(frame []byte) outerInfo {
	ip := frame[14:]
	udp := ip[int(ip[0]&0x0f)*4:]
	return outerInfo{
		SrcPort:  binary.BigEndian.Uint16(udp[0:2]),
		Checksum: binary.BigEndian.Uint16(udp[6:8]) != 0,
		DF:       ip[6]&0x40 != 0,
		TTL:      ip[8],
	}
}

// linkMAC is the hardware address of ifname in ns.
func linkMAC(ns lab.Netns, ifname string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("%s in %s: %w", ifname, ns, err)
		}
		mac = ifi.HardwareAddr
		return nil
	})
	return mac, err
}

func podList(pods []*lab.Pod) string {
	var s []string
	for _, p := range pods {
		s = append(s, fmt.Sprintf("%s=%s@%s", p.Name, p.IP, p.Node.Name))
	}
	return strings.Join(s, " ")
}

func grepLines(s, substr string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
