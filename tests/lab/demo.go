package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/net/ipv4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	domainmodel "github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
)

// The demo (`make demo`, tests/lab/cmd/demo) is one scenario a new user watches in about a
// minute, and tests/demo runs the same function and checks what it reports:
//
//   - two network domains: node1 and node2 in the cloud (pool "cloud"), node3 in site-b (pool
//     "site-b", behind NAT: public-ip-overwrite set). No domain ConfigMap, so the two domains are
//     public to each other: pods of one never reach pods of the other;
//   - a ping between every pair of pods on different nodes: same domain answered, cloud <-> site-b
//     answered at once by the sender's node with ICMP host unreachable, each drop counted as
//     DOMAIN_UNREACHABLE where it happened;
//   - a Service (ClusterIP) whose EndpointSlices the real kube-controller-manager makes from the
//     web pods of node1 and node2, answering a client's requests from both;
//   - the edgeplanectl commands that show node1's routes, services, drop counters and a live
//     monitor, with the lab's network namespace, bpffs root and run directory filled in.

// DemoServicePort is the demo Service's port; its pods answer on DemoTargetPort (ServeHostname).
const (
	DemoServicePort = 80
	DemoTargetPort  = 8080
	DemoService     = "web"
	demoPoolCloud   = DomainCloud
	demoPoolSite    = DomainSiteB
	demoRequests    = 20
)

// demoLayout is the demo's nodes: name, domain (also the node's pool), NAT address published.
var demoLayout = []struct {
	name, domain string
	natted       bool
}{
	{"node1", demoPoolCloud, false},
	{"node2", demoPoolCloud, false},
	{"node3", demoPoolSite, true},
}

// Demo is what RunDemo built and saw.
type Demo struct {
	Lab    *Lab
	Nodes  []*Node
	Client *Pod   // on node1: the Service's client
	Web    []*Pod // web-<node> on every node; those in the cloud back the Service
	Pings  []DemoPing
	// DomainDrops is the DOMAIN_UNREACHABLE drops (pod egress) the pings added, per node name.
	DomainDrops map[string]uint64
	Service     *corev1.Service
	// Answers counts the answers to DemoRequests requests to the Service's ClusterIP by pod name;
	// AnswerNodes by the answering pod's node.
	Answers     map[string]int
	AnswerNodes map[string]int
	// Commands are the edgeplanectl commands printed for node1.
	Commands []DemoCommand
	Took     time.Duration
}

// DemoPing is one ping of the matrix.
type DemoPing struct {
	From, To *Pod
	// Reachable is what the domains say: both pods' nodes in one domain.
	Reachable bool
	Answer    PingAnswer
	Err       error // neither an echo reply nor an ICMP error in time
}

// OK reports whether the ping came out as the domains say: a reply when reachable, an ICMP
// destination unreachable otherwise.
func (p DemoPing) OK() bool {
	return p.Err == nil && p.Answer.Unreachable != p.Reachable
}

// DemoCommand is an edgeplanectl invocation ready to paste as root on the machine running the lab.
type DemoCommand struct {
	What string   // "routes", "services", "stats", "monitor"
	Argv []string // nsenter --net=<node netns> <bin>/edgeplanectl --bpffs-root <...> --run-dir <...> <verb>...
	// Live commands run until interrupted (Ctrl-C).
	Live bool
}

// String is the command as one shell line.
func (c DemoCommand) String() string {
	out := make([]string, len(c.Argv))
	for i, a := range c.Argv {
		out[i] = shellQuote(a)
	}
	return strings.Join(out, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@%+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CtlCommand is the command line that runs edgeplanectl with args on node n: in its network
// namespace (nsenter --net, which unlike `ip netns exec` leaves /sys and the lab's bpffs mounts
// alone), against its bpffs root and run directory.
func (n *Node) CtlCommand(args ...string) []string {
	return append([]string{"nsenter", "--net=" + n.Netns.Path(),
		filepath.Join(n.lab.cfg.EdgeplaneBin, "edgeplanectl"),
		"--bpffs-root", n.BPFFS, "--run-dir", n.RunDir}, args...)
}

// RunDemo builds the demo's nodes, pods and Service in l (an empty lab, as New returns it),
// narrating on out, and returns what it saw. It fails when the scenario does not come out as
// shown: a ping against the domains, a Service answered by fewer than two nodes' pods, drops not
// counted. The servers it starts stop at l.Close.
func RunDemo(ctx context.Context, l *Lab, out io.Writer) (*Demo, error) {
	start := time.Now()
	ctl := filepath.Join(l.cfg.EdgeplaneBin, "edgeplanectl")
	if _, err := os.Stat(ctl); err != nil {
		return nil, fmt.Errorf("edgeplanectl: %w (make build)", err)
	}
	d := &Demo{Lab: l}
	fmt.Fprintf(out, "== lab %s: API server %s, files in %s\n", l.ID, l.API.URL, l.Dir)

	// kube-controller-manager (EndpointSlices) comes up while the nodes are built.
	kcm := make(chan error, 1)
	go func() {
		_, err := l.StartControllerManager(ctx, ControllerManagerOptions{})
		kcm <- err
	}()
	kcmDone := false
	defer func() {
		if !kcmDone {
			<-kcm
		}
	}()
	for i, x := range demoLayout {
		n, err := l.AddNode(ctx, x.name, i+1, NodeOptions{
			Domain: x.domain, PublicIPOverwrite: x.natted,
			Labels: map[string]string{domainmodel.DefaultPoolLabel: x.domain},
		})
		if err != nil {
			return nil, err
		}
		d.Nodes = append(d.Nodes, n)
	}
	for _, n := range d.Nodes {
		labels := map[string]string{"app": DemoService}
		if n.Domain != demoPoolCloud {
			labels = map[string]string{"app": "site-" + DemoService} // not the Service's
		}
		p, err := l.AddPod(ctx, n, "web-"+n.Name, PodOptions{Labels: labels})
		if err != nil {
			return nil, err
		}
		srv, err := p.ServeHostname(DemoTargetPort)
		if err != nil {
			return nil, err
		}
		l.onClose(func() { srv.Close() })
		d.Web = append(d.Web, p)
	}
	client, err := l.AddPod(ctx, d.Nodes[0], "client", PodOptions{})
	if err != nil {
		return nil, err
	}
	d.Client = client
	fmt.Fprintf(out, "\n== cluster: agents and pods up after %v\n", time.Since(start).Round(100*time.Millisecond))
	d.printCluster(out)

	if err := d.waitRoutes(ctx, 20*time.Second); err != nil {
		return nil, err
	}
	if err := d.pingMatrix(ctx, out); err != nil {
		return nil, err
	}

	kcmDone = true
	if err := <-kcm; err != nil {
		return nil, err
	}
	if err := d.serviceAnswers(ctx, out); err != nil {
		return nil, err
	}

	d.Commands = []DemoCommand{
		{What: "routes", Argv: d.Nodes[0].CtlCommand("routes")},
		{What: "services", Argv: d.Nodes[0].CtlCommand("services")},
		{What: "stats", Argv: d.Nodes[0].CtlCommand("stats")},
		{What: "monitor", Argv: d.Nodes[0].CtlCommand("monitor"), Live: true},
	}
	d.printCommands(out)
	d.Took = time.Since(start)
	fmt.Fprintf(out, "\n== demo ready after %v\n", d.Took.Round(100*time.Millisecond))
	return d, nil
}

func (d *Demo) printCluster(out io.Writer) {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tDOMAIN (POOL)\tNODE IP\tPUBLIC IP (NAT)\tPOD CIDR\tNETNS\tAGENT PID")
	for _, n := range d.Nodes {
		public := "-"
		if n.Domain != demoPoolCloud {
			public = n.PublicIP.String() + " (public-ip-overwrite)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\n", n.Name, n.Domain, n.IP, public, n.PodCIDR, n.Netns, n.Agent.Pid())
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t")
	fmt.Fprintln(tw, "  POD\tNODE\tPOD IP\tLABELS\t\tNETNS\t")
	for _, p := range append(slices.Clone(d.Web), d.Client) {
		label := "app=" + DemoService
		if p == d.Client {
			label = "-"
		} else if p.Node.Domain != demoPoolCloud {
			label = "app=site-" + DemoService
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t\t%s\t\n", p.Name, p.Node.Name, p.IP, label, p.Netns)
	}
	tw.Flush()
}

// waitRoutes waits until every node's routes_map holds every node's pod CIDR: before that a
// cross-domain ping would meet no route rather than the domain check.
func (d *Demo) waitRoutes(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var missing []string
		for _, n := range d.Nodes {
			routes, err := n.Routes()
			if err != nil {
				return err
			}
			for _, m := range d.Nodes {
				if _, ok := routes[m.PodCIDR]; !ok {
					missing = append(missing, fmt.Sprintf("%s has no route to %s's %s", n.Name, m.Name, m.PodCIDR))
				}
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("routes after %v: %s", timeout, strings.Join(missing, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// domainDrops reads every node's DOMAIN_UNREACHABLE pod egress counter.
func (d *Demo) domainDrops() (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, n := range d.Nodes {
		c, err := n.Counters()
		if err != nil {
			return nil, err
		}
		out[n.Name] = c[metricsmap.Key{Dir: metricsmap.DirPodEgress, Reason: uint32(dropreason.DomainUnreachable)}].Packets
	}
	return out, nil
}

// pingMatrix pings once from every pod to every pod on another node. Reachable pairs get a few
// seconds to answer (a new node's tunnel and neighbour settle); an unreachable pair is pinged once,
// so the drop counters must grow by exactly the number of unreachable pairs.
func (d *Demo) pingMatrix(ctx context.Context, out io.Writer) error {
	fmt.Fprintln(out, "\n== ping between pods on different nodes (cloud and site-b are public to each other: no pod traffic crosses)")
	before, err := d.domainDrops()
	if err != nil {
		return err
	}
	pods := append([]*Pod{d.Client}, d.Web...)
	var failed, unreachable int
	for _, src := range pods {
		for _, dst := range pods {
			if src.Node == dst.Node {
				continue
			}
			p := DemoPing{From: src, To: dst, Reachable: src.Node.Domain == dst.Node.Domain}
			if p.Reachable {
				if _, err := WaitPing(ctx, src.Netns, dst.IP, 5*time.Second); err != nil {
					p.Err = err
				}
			}
			if p.Err == nil {
				p.Answer, p.Err = PingOrUnreachable(src.Netns, dst.IP, 2*time.Second)
			}
			d.Pings = append(d.Pings, p)
			if !p.Reachable {
				unreachable++
			}
			verdict := ""
			switch {
			case p.Err != nil:
				verdict = "FAIL " + p.Err.Error()
			case p.Answer.Unreachable:
				verdict = fmt.Sprintf("host unreachable from %s after %v", p.Answer.From, p.Answer.RTT.Round(time.Microsecond))
			default:
				verdict = fmt.Sprintf("reply after %v", p.Answer.RTT.Round(time.Microsecond))
			}
			if !p.OK() {
				failed++
				verdict = "UNEXPECTED: " + verdict
			}
			fmt.Fprintf(out, "  %-10s (%-6s) -> %-10s (%-6s) %-12s %s\n", src.Name, src.Node.Domain, dst.Name, dst.Node.Domain, dst.IP, verdict)
		}
	}
	// Counters are per-CPU sums the datapath bumps before it answers: read at once they are final.
	after, err := d.domainDrops()
	if err != nil {
		return err
	}
	d.DomainDrops = map[string]uint64{}
	var total uint64
	var per []string
	for _, n := range d.Nodes {
		d.DomainDrops[n.Name] = after[n.Name] - before[n.Name]
		total += d.DomainDrops[n.Name]
		per = append(per, fmt.Sprintf("%s +%d", n.Name, d.DomainDrops[n.Name]))
	}
	fmt.Fprintf(out, "  DOMAIN_UNREACHABLE drops counted at the source: +%d (%s) for %d unreachable pairs\n", total, strings.Join(per, ", "), unreachable)
	if failed > 0 {
		return fmt.Errorf("%d of %d pings came out against the domains", failed, len(d.Pings))
	}
	if total != uint64(unreachable) {
		return fmt.Errorf("DOMAIN_UNREACHABLE +%d, want +%d (one per unreachable pair)", total, unreachable)
	}
	return nil
}

// serviceAnswers creates the Service, waits for its two ready endpoints and asks its ClusterIP
// DemoRequests times from the client, until pods on at least two nodes have answered.
func (d *Demo) serviceAnswers(ctx context.Context, out io.Writer) error {
	svc, err := d.Lab.CreateService(ctx, DemoService, ServiceOptions{
		Selector: map[string]string{"app": DemoService},
		Ports:    []corev1.ServicePort{{Name: "http", Port: DemoServicePort, TargetPort: intstr.FromInt(DemoTargetPort), Protocol: corev1.ProtocolTCP}},
	})
	if err != nil {
		return err
	}
	d.Service = svc
	eps, err := d.Lab.WaitReadyEndpoints(ctx, DemoService, 2, 30*time.Second)
	if err != nil {
		return err
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), DemoServicePort)
	fmt.Fprintf(out, "\n== Service %s: ClusterIP %s -> port %d of the pods labelled app=%s; EndpointSlices by kube-controller-manager list %d ready endpoints\n",
		DemoService, vip, DemoTargetPort, DemoService, len(eps))
	nodeOf := map[string]string{}
	for _, p := range d.Web {
		nodeOf[p.Name] = p.Node.Name
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		counts, err := CountHostnames(d.Client.Netns, corev1.ProtocolTCP, vip, demoRequests, 2*time.Second)
		d.Answers = counts
		d.AnswerNodes = map[string]int{}
		for pod, n := range counts {
			d.AnswerNodes[nodeOf[pod]] += n
		}
		if err == nil && len(d.AnswerNodes) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Service %s from %s: answers %s by node %v: %v", DemoService, d.Client.Name, FormatCounts(counts), d.AnswerNodes, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	names := make([]string, 0, len(d.Answers))
	for pod := range d.Answers {
		names = append(names, pod)
	}
	sort.Strings(names)
	var parts []string
	for _, pod := range names {
		parts = append(parts, fmt.Sprintf("%s on %s: %d", pod, nodeOf[pod], d.Answers[pod]))
	}
	fmt.Fprintf(out, "  %d TCP connections from %s (%s) to %s, each a new flow: %s\n", demoRequests, d.Client.Name, d.Client.IP, vip, strings.Join(parts, ", "))
	return nil
}

func (d *Demo) printCommands(out io.Writer) {
	n := d.Nodes[0]
	fmt.Fprintf(out, "\n== %s's datapath, read from its pinned maps (paste as root while the lab is up)\n", n.Name)
	for _, c := range d.Commands {
		if c.Live {
			fmt.Fprintf(out, "  %s, live (Ctrl-C stops it):\n    %s\n", c.What, c)
			continue
		}
		fmt.Fprintf(out, "  %s:\n    %s\n", c.What, c)
	}
	var site *Pod
	for _, p := range d.Web {
		if p.Node.Domain != n.Domain {
			site = p
		}
	}
	if site != nil {
		fmt.Fprintf(out, "  then, to see a drop go by, from another terminal (a TCP connect from the client to %s fails the same way):\n    %s\n",
			site.Name, DemoCommand{Argv: []string{"nsenter", "--net=" + d.Client.Netns.Path(), "ping", "-c", "1", site.IP.String()}})
	}
	fmt.Fprintf(out, "  more verbs: edgeplanectl --help (domains, nodes, endpoints, conntrack, route get <IP>, -o json)\n")
}

// PingAnswer is how a ping was answered: an echo reply, or an ICMP destination unreachable about
// the request (Unreachable, with its code), from From after RTT.
type PingAnswer struct {
	RTT         time.Duration
	From        netip.Addr
	Unreachable bool
	Code        int
}

// PingOrUnreachable sends one ICMP echo request from ns to dst and waits for its echo reply or for
// an ICMP destination unreachable quoting it (what edgeplane answers toward an unreachable
// domain). Ping ignores the latter and waits out its timeout.
func PingOrUnreachable(ns Netns, dst netip.Addr, timeout time.Duration) (PingAnswer, error) {
	a, err := echoProbe(ns, dst, 0, "edgeplane-demo", timeout, ipv4.ICMPTypeDestinationUnreachable)
	if err != nil {
		return PingAnswer{}, fmt.Errorf("ping %s from %s: neither a reply nor an ICMP error: %w", dst, ns, err)
	}
	if a.typ == ipv4.ICMPTypeEchoReply {
		return PingAnswer{RTT: a.rtt, From: a.from}, nil
	}
	return PingAnswer{RTT: a.rtt, From: a.from, Unreachable: true, Code: a.code}, nil
}

// quotesEcho reports whether an ICMP error's quoted datagram is our echo request to dst.
func quotesEcho(quoted []byte, dst netip.Addr, id int) bool {
	if len(quoted) < 20 {
		return false
	}
	ihl := int(quoted[0]&0x0f) * 4
	if ihl < 20 || len(quoted) < ihl+8 || quoted[9] != 1 {
		return false
	}
	if netip.AddrFrom4([4]byte(quoted[16:20])) != dst {
		return false
	}
	echo := quoted[ihl:]
	return echo[0] == byte(ipv4.ICMPTypeEcho) && int(echo[4])<<8|int(echo[5]) == id
}
