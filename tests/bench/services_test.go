package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/pkg/service"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// BenchmarkServices compares edgeplane's Services datapath with the real kube-proxy in iptables
// mode, in one lab and one run, with 1, 1,000 and 10,000 Services programmed (BENCH_SERVICES,
// comma list): node ep-1 runs edgeplane, node kp-1 runs kube-proxy with the bridge CNI, both
// against the same API server and the same Services. Per step, in alternating rounds:
//
//   - clusterip: a client pod reaches a backend pod on its own node through a ClusterIP: TCP
//     request/response (sockperf, 64 B) and connect rate (tests/bench/crr: connect, 1 B each way,
//     close);
//   - nodeport-drop: UDP to a NodePort the node must not serve, received on the node's NIC (live
//     XDP frames, inject.go): edgeplane isolates it (nodeport.openyurt.io/listen) and drops it in
//     node_xdp, run as a native-XDP NIC would (edgeplane-native), or in node_ingress behind a NIC
//     without native XDP (edgeplane-tc, what the lab's veth NICs get); kube-proxy either has no rule for it
//     (the Service hidden from it, as OpenYurt's yurthub filter isolates NodePorts: kube-proxy-
//     norule) or drops it in its own filter rule (externalTrafficPolicy Local without a local
//     endpoint: kube-proxy-droprule);
//   - nodeport-forward: UDP to a NodePort whose backend is a pod on the node, same injection.
//
// Each sample runs with the other proxy stopped (alone).
//
// The Services beyond the benchmark's own are selector-less ClusterIP Services with 10 endpoints
// each (lab.BulkServices). Results go to bench/results.json; docs/benchmarks.md reports them.
func BenchmarkServices(b *testing.B) {
	s := setupServicesBench(b, newLab(b))

	steps := parseSteps(b, os.Getenv("BENCH_SERVICES"), []int{1, 1000, 10000})
	rounds := envInt("BENCH_ROUNDS", 5)
	secs := envInt("BENCH_SECONDS", 4)
	var results []Result
	perStep := map[int][]Result{}
	for _, n := range steps {
		prog := s.grow(b, n)
		results = append(results, prog...)
		step := s.measure(b, n, rounds, secs)
		perStep[n] = step
		results = append(results, step...)
	}
	results = append(results, scaling(steps, perStep)...)
	b.StopTimer()
	report(b, results, time.Now())
}

func parseSteps(b *testing.B, v string, def []int) []int {
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("BENCH_SERVICES=%q: want a comma list of counts >= 1", v)
		}
		out = append(out, n)
	}
	return out
}

type servicesBench struct {
	l        *lab.Lab
	ep, kp   *lab.Node
	proxy    *lab.KubeProxy
	crr      string
	rr       []Path // clusterip: kube-proxy, edgeplane
	drop     []livePath
	forward  []livePath
	fillers  int // bulk Services created so far
	svc0     int // edgeplane frontends before any bulk Service
	kpRules0 int // kube-proxy KUBE-SERVICES rules before any bulk Service
}

// livePath is one way a node receives injected frames.
type livePath struct {
	name   string
	node   *lab.Node
	prog   *ebpf.Program
	frame  []byte
	frames uint32 // per sample, calibrated to about a second
	// verify checks, before the rounds, that the node did with a test run what the path claims.
	verify func(b *testing.B, p *livePath)
}

const (
	rrPort   = 7000
	crrPort  = 7001
	udpPort  = 9
	benchCPU = 1
)

func setupServicesBench(b *testing.B, l *lab.Lab) *servicesBench {
	ctx := context.Background()
	s := &servicesBench{l: l}
	var err error
	if s.ep, err = l.AddNode(ctx, "ep-1", 1, lab.NodeOptions{Labels: map[string]string{domain.DefaultPoolLabel: "pool-a"}}); err != nil {
		b.Fatal(err)
	}
	if s.kp, err = l.AddNode(ctx, "kp-1", 2, lab.NodeOptions{NoAgent: true}); err != nil {
		b.Fatal(err)
	}
	if err := l.UseBridgeCNI(s.kp); err != nil {
		b.Fatal(err)
	}
	if s.proxy, err = l.StartKubeProxy(ctx, s.kp, lab.KubeProxyOptions{}); err != nil {
		b.Fatal(err)
	}
	pod := func(n *lab.Node, name string) *lab.Pod {
		p, err := l.AddPod(ctx, n, name, lab.PodOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	cEP, sEP, cKP, sKP := pod(s.ep, "client-ep"), pod(s.ep, "server-ep"), pod(s.kp, "client-kp"), pod(s.kp, "server-kp")

	s.crr = buildCRR(b, l)

	newService := func(name string, opts lab.ServiceOptions, backend *lab.Pod) *corev1.Service {
		svc, err := l.CreateService(ctx, name, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.SetEndpoints(ctx, svc, backend); err != nil {
			b.Fatal(err)
		}
		return svc
	}
	tcp := func(name string, port int) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: int32(port), TargetPort: intstr.FromInt(port), Protocol: corev1.ProtocolTCP}
	}
	udp := []corev1.ServicePort{{Name: "udp", Port: udpPort, TargetPort: intstr.FromInt(udpPort), Protocol: corev1.ProtocolUDP}}
	rrOpts := lab.ServiceOptions{Ports: []corev1.ServicePort{tcp("rr", rrPort), tcp("crr", crrPort)}}
	rrKP, rrEP := newService("rr-kp", rrOpts, sKP), newService("rr-ep", rrOpts, sEP)
	// Isolated on ep-1's pool; handed to edgeplane only, so kube-proxy has no rule for it.
	closed := newService("np-closed", lab.ServiceOptions{Type: corev1.ServiceTypeNodePort, Ports: udp,
		Labels:      map[string]string{service.ProxyNameLabel: service.ProxyName},
		Annotations: map[string]string{service.ListenAnnotation: "-pool-a"}}, sEP)
	// Its only backend is on ep-1: kube-proxy on kp-1 drops it in its filter rule.
	local := newService("np-local", lab.ServiceOptions{Type: corev1.ServiceTypeNodePort, Ports: udp,
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal}, sEP)
	fwdKP := newService("np-fwd-kp", lab.ServiceOptions{Type: corev1.ServiceTypeNodePort, Ports: udp}, sKP)
	fwdEP := newService("np-fwd-ep", lab.ServiceOptions{Type: corev1.ServiceTypeNodePort, Ports: udp}, sEP)

	ep := func(p *lab.Pod) Endpoint { return Endpoint{NetNS: p.Netns.Name(), IP: p.IP.String()} }
	s.rr = []Path{
		{Name: "kube-proxy", Client: ep(cKP), Server: ep(sKP), Dial: rrKP.Spec.ClusterIP},
		{Name: "edgeplane", Client: ep(cEP), Server: ep(sEP), Dial: rrEP.Spec.ClusterIP},
	}
	// Both proxies have programmed the benchmark's Services once both paths carry traffic.
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range s.rr {
		for {
			_, err := RequestResponse(p, true, 1, "", rrPort)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("clusterip path %s: %v", p.Name, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	epMAC, kpMAC := nicMAC(b, s.ep), nicMAC(b, s.kp)
	src := netip.AddrPortFrom(lab.OutsideIP, 40000)
	frame := func(mac net.HardwareAddr, n *lab.Node, svc *corev1.Service) []byte {
		return udpFrame(net.HardwareAddr{0x02, 0, 0, 0, 0, 0x64}, mac, src, netip.AddrPortFrom(n.IP, uint16(svc.Spec.Ports[0].NodePort)))
	}
	pass := func(f []byte) *ebpf.Program {
		p, err := injectPass(f)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p
	}
	xdp, err := nodeXDP(s.ep)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { xdp.Close() })
	closedEP, closedKP, localKP := frame(epMAC, s.ep, closed), frame(kpMAC, s.kp, closed), frame(kpMAC, s.kp, local)
	s.drop = []livePath{
		{name: "kube-proxy-norule", node: s.kp, prog: pass(closedKP), frame: closedKP, verify: verifyNoPort(s.kp.Netns)},
		{name: "kube-proxy-droprule", node: s.kp, prog: pass(localKP), frame: localKP, verify: verifyRuleDrop(s.proxy, local.Spec.Ports[0].NodePort)},
		{name: "edgeplane-tc", node: s.ep, prog: pass(closedEP), frame: closedEP, verify: verifyDrop(metricsmap.DirNodeIn, "node_ingress")},
		{name: "edgeplane-native", node: s.ep, prog: xdp, frame: closedEP, verify: verifyDrop(metricsmap.DirNodeXDP, "node_xdp")},
	}
	fKP, fEP := frame(kpMAC, s.kp, fwdKP), frame(epMAC, s.ep, fwdEP)
	s.forward = []livePath{
		{name: "kube-proxy", node: s.kp, prog: pass(fKP), frame: fKP, verify: verifyNoPort(sKP.Netns)},
		{name: "edgeplane", node: s.ep, prog: pass(fEP), frame: fEP, verify: verifyNoPort(sEP.Netns)},
	}
	for _, ps := range [][]livePath{s.drop, s.forward} {
		for i := range ps {
			ps[i].verify(b, &ps[i])
		}
	}
	if s.svc0, err = s.ep.ServiceFrontends(); err != nil {
		b.Fatal(err)
	}
	if s.kpRules0, err = s.kubeProxyServices(); err != nil {
		b.Fatal(err)
	}
	return s
}

func (s *servicesBench) measure(b *testing.B, n, rounds, secs int) []Result {
	prefix := fmt.Sprintf("services-%d/", n)
	var out []Result
	rr := []metric{
		{name: "tcp_rr", unit: "transactions/s", better: "higher",
			measure: func(p Path, _ int) (Sample, error) {
				return RequestResponse(p, true, secs, strconv.Itoa(benchCPU), rrPort)
			},
			value: func(s Sample) float64 { return s.TPS }},
		{name: "connect_rate", unit: "connections/s", better: "higher",
			measure: func(p Path, _ int) (Sample, error) {
				return ConnectRate(s.crr, p, secs, strconv.Itoa(benchCPU), crrPort)
			},
			value: func(s Sample) float64 { return s.TPS }},
	}
	g := group{name: prefix + "clusterip", paths: s.rr, metrics: rr}
	for _, m := range rr {
		samples := make([][]Sample, len(g.paths))
		for r := range rounds {
			for _, i := range ABBAOrder(len(g.paths), r) {
				var smp Sample
				err := s.alone(g.paths[i].Name, func() (err error) { smp, err = m.measure(g.paths[i], 0); return err })
				if err != nil {
					b.Fatalf("%s %s %s round %d: %v", g.name, m.name, g.paths[i].Name, r, err)
				}
				samples[i] = append(samples[i], smp)
			}
		}
		out = append(out, summarize(g, m, samples)...)
	}
	for _, lg := range []struct {
		name  string
		paths []livePath
	}{{"nodeport-drop", s.drop}, {"nodeport-forward", s.forward}} {
		g := group{name: prefix + lg.name}
		for _, p := range lg.paths {
			g.paths = append(g.paths, Path{Name: p.name})
		}
		m := metric{name: "pps", unit: "packets/s (one CPU)", better: "higher", value: func(s Sample) float64 { return s.PPS }}
		samples := make([][]Sample, len(lg.paths))
		for r := range rounds {
			for _, i := range ABBAOrder(len(lg.paths), r) {
				p := lg.paths[i]
				var smp Sample
				err := s.alone(p.name, func() (err error) {
					smp, err = LiveRate(p.node.Netns, "eth0", p.prog, p.frame, p.frames, benchCPU)
					return err
				})
				if err != nil {
					b.Fatalf("%s %s round %d: %v", g.name, p.name, r, err)
				}
				samples[i] = append(samples[i], smp)
			}
		}
		out = append(out, summarize(g, m, samples)...)
	}
	return out
}

// alone runs fn, a sample of the path named path, with the other proxy stopped (SIGSTOP): on a real
// node only one of them runs, and with 10,000 Services each has periodic work of its own
// (kube-proxy rewrites its nat table every 30 s, the agent resyncs), which on this 2-CPU machine
// would otherwise be charged to the other's samples too. Rules and maps stay in place while their
// proxy is stopped. The control plane (API server, etcd, kube-controller-manager) is paused for
// the sample too, unless BENCH_SERVICES_KEEP_API=1: after taking 20,000 objects it works in the
// background on the same two CPUs, which moved the connect rate of both proxies by up to 40%
// between runs (docs/benchmarks.md). A real node's control plane runs elsewhere.
func (s *servicesBench) alone(path string, fn func() error) error {
	other := s.proxy.Process
	if strings.HasPrefix(path, "kube-proxy") {
		other = s.ep.Agent
	}
	if err := other.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	defer other.Signal(syscall.SIGCONT)
	if os.Getenv("BENCH_SERVICES_KEEP_API") != "1" {
		resume, err := s.l.API.Pause()
		if err != nil {
			return err
		}
		defer resume()
	}
	return fn()
}
