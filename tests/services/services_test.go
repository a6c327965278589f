// Package services is the end-to-end suite of Services in eBPF (issue 4, docs/services.md): real
// edgeplane agents and CNI, a real kube-apiserver and the real kube-controller-manager making
// EndpointSlices; clients in pods, on nodes and outside. Run it with `make test` (root).
package services

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	hostnamePort = 8080
	echoPort     = 9000
	waitLimit    = 15 * time.Second
)

// The cluster: n1 and n2 in pool pool-a, n3 in pool pool-b, one network (the domain ConfigMap makes
// every pair private); a backend pod web-<n> and a client pod client-<n> on each node.
type cluster struct {
	lab     *lab.Lab
	nodes   []*lab.Node
	web     []*lab.Pod
	clients []*lab.Pod
}

func build(t *testing.T) *cluster {
	t.Helper()
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if _, err := l.StartControllerManager(ctx, lab.ControllerManagerOptions{}); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-domains", Namespace: lab.AgentNamespace},
		Data: map[string]string{domain.ConfigKey: "defaultConnectivity: private\n"}}
	if _, err := l.Client.CoreV1().ConfigMaps(lab.AgentNamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &cluster{lab: l}
	for i, pool := range []string{"pool-a", "pool-a", "pool-b"} {
		n, err := l.AddNode(ctx, fmt.Sprintf("n%d", i+1), i+1, lab.NodeOptions{Labels: map[string]string{domain.DefaultPoolLabel: pool}})
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		w, err := l.AddPod(ctx, n, "web-"+n.Name, lab.PodOptions{Labels: map[string]string{"app": "web"}})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := w.ServeHostname(hostnamePort)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		echo, err := lab.ServeTCPEcho(w.Netns, netip.AddrPortFrom(w.IP, echoPort))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { echo.Close() })
		c.web = append(c.web, w)
		cl, err := l.AddPod(ctx, n, "client-"+n.Name, lab.PodOptions{Labels: map[string]string{"app": "client"}})
		if err != nil {
			t.Fatal(err)
		}
		c.clients = append(c.clients, cl)
	}
	return c
}

func (c *cluster) webService(t *testing.T, name string, opts lab.ServiceOptions) *corev1.Service {
	t.Helper()
	opts.Selector = map[string]string{"app": "web"}
	if opts.Ports == nil {
		opts.Ports = []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolTCP},
			{Name: "dns", Port: 53, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolUDP},
			{Name: "echo", Port: 81, TargetPort: intstr.FromInt(echoPort), Protocol: corev1.ProtocolTCP},
		}
	}
	svc, err := c.lab.CreateService(t.Context(), name, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.lab.WaitReadyEndpoints(t.Context(), name, len(c.web), waitLimit); err != nil {
		t.Fatal(err)
	}
	return svc
}

func vip(svc *corev1.Service, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), port)
}

// answers asks n times from ns and returns the set of pods that answered, retrying until want
// holds or the wait limit passes (the agents follow the API server within milliseconds, but
// EndpointSlices and labels travel through watches).
func answers(t *testing.T, ns lab.Netns, proto corev1.Protocol, dst netip.AddrPort, n int, want func(map[string]int) bool) map[string]int {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		counts, err := lab.CountHostnames(ns, proto, dst, n, 2*time.Second)
		if err == nil && want(counts) {
			return counts
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %v from %s: %s, %v", proto, dst, ns, lab.FormatCounts(counts), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func exactly(names ...string) func(map[string]int) bool {
	return func(got map[string]int) bool {
		if len(got) != len(names) {
			return false
		}
		for _, n := range names {
			if got[n] == 0 {
				return false
			}
		}
		return true
	}
}

func (c *cluster) annotate(t *testing.T, svc, key, value string) {
	t.Helper()
	if _, err := c.lab.UpdateService(t.Context(), svc, func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		if value == "" {
			delete(s.Annotations, key)
		} else {
			s.Annotations[key] = value
		}
	}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) setPool(t *testing.T, node, pool string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, domain.DefaultPoolLabel, pool)
	if _, err := c.lab.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func counter(t *testing.T, n *lab.Node, dir metricsmap.Dir, reason dropreason.Reason) uint64 {
	t.Helper()
	m, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return m[metricsmap.Key{Dir: dir, Reason: uint32(reason)}].Packets
}

// nodePortDrops is n's NODEPORT_CLOSED count wherever the node dropped: node_xdp on a NIC with
// native XDP, node_ingress (tc) on the others, such as the lab's veths.
func nodePortDrops(t *testing.T, n *lab.Node) uint64 {
	t.Helper()
	m, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	reason := uint32(dropreason.NodePortClosed)
	return m[metricsmap.Key{Dir: metricsmap.DirNodeXDP, Reason: reason}].Packets + m[metricsmap.Key{Dir: metricsmap.DirNodeIn, Reason: reason}].Packets
}

func TestServices(t *testing.T) {
	c := build(t)
	svc := c.webService(t, "web", lab.ServiceOptions{})
	all := exactly("web-n1", "web-n2", "web-n3")

	t.Run("clusterip-from-pods", func(t *testing.T) {
		for _, cl := range c.clients {
			tcp := answers(t, cl.Netns, corev1.ProtocolTCP, vip(svc, 80), 30, all)
			udp := answers(t, cl.Netns, corev1.ProtocolUDP, vip(svc, 53), 30, all)
			t.Logf("%s: TCP %s, UDP %s", cl.Name, lab.FormatCounts(tcp), lab.FormatCounts(udp))
		}
		// The backend sees the client's own address: no SNAT inside the cluster.
		_, seen, err := lab.AskHostname(c.clients[2].Netns, corev1.ProtocolTCP, vip(svc, 80), 2*time.Second)
		if err != nil || seen.Addr() != c.clients[2].IP {
			t.Errorf("backend saw %v (%v), want the client pod's %v", seen, err, c.clients[2].IP)
		}
	})

	t.Run("clusterip-from-node", func(t *testing.T) {
		counts := answers(t, c.nodes[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 30, all)
		t.Logf("n1's host: %s", lab.FormatCounts(counts))
	})

	t.Run("hairpin", func(t *testing.T) {
		// web-n1 reaching its own Service lands on itself now and then; every answer arrives.
		counts := answers(t, c.web[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 30, func(m map[string]int) bool { return m["web-n1"] > 0 })
		t.Logf("web-n1 -> web: %s", lab.FormatCounts(counts))
	})

	t.Run("topology-per-node-and-pool", func(t *testing.T) {
		c.annotate(t, "web", "openyurt.io/topologyKeys", "kubernetes.io/hostname")
		answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly("web-n1"))
		answers(t, c.clients[2].Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly("web-n3"))
		c.annotate(t, "web", "openyurt.io/topologyKeys", "openyurt.io/nodepool")
		answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 20, exactly("web-n1", "web-n2"))
		answers(t, c.clients[2].Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly("web-n3"))
		// n2 moves to pool-b: live, for both sides.
		c.setPool(t, "n2", "pool-b")
		answers(t, c.clients[2].Netns, corev1.ProtocolTCP, vip(svc, 80), 20, exactly("web-n2", "web-n3"))
		answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly("web-n1"))
		c.setPool(t, "n2", "pool-a")
		c.annotate(t, "web", "openyurt.io/topologyKeys", "")
		answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 30, all)
	})

	t.Run("not-ready-backend-gets-no-new-connections", func(t *testing.T) {
		conn, err := lab.DialTCP(c.clients[0].Netns, vip(svc, 81), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := c.web[1].SetReady(t.Context(), false); err != nil {
			t.Fatal(err)
		}
		answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 30, exactly("web-n1", "web-n3"))
		if err := c.web[1].SetReady(t.Context(), true); err != nil {
			t.Fatal(err)
		}
		answers(t, c.clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 30, all)
		// The connection opened before keeps working throughout.
		if err := echoOnce(conn); err != nil {
			t.Errorf("the connection opened before the change: %v", err)
		}
	})

	t.Run("established-connections-survive-agent-restart", func(t *testing.T) {
		var conns []net.Conn
		for range 6 {
			conn, err := lab.DialTCP(c.clients[0].Netns, vip(svc, 81), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := echoOnce(conn); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
		}
		start := time.Now()
		if err := c.nodes[0].RestartAgent(t.Context(), nil, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		for i, conn := range conns {
			if err := echoOnce(conn); err != nil {
				t.Errorf("connection %d after the restart: %v", i, err)
			}
		}
		t.Logf("6 established connections through the ClusterIP kept working across a %v agent restart", time.Since(start).Round(time.Millisecond))
	})

	t.Run("nodeport-isolation", func(t *testing.T) { testNodePortIsolation(t, c) })
	t.Run("nodeport-cluster-from-outside", func(t *testing.T) { testNodePortCluster(t, c, all) })
	t.Run("nodeport-local-from-outside", func(t *testing.T) { testNodePortLocal(t, c) })
	t.Run("loadbalancer-ip-and-external-ip", func(t *testing.T) { testLoadBalancerIP(t, c, all) })

	t.Run("nodeport-remote-backend-errors-and-bulk", func(t *testing.T) { testNodePortRemoteBackendErrorsAndBulk(t, c) })
	t.Run("pods-to-node-ports", func(t *testing.T) { testPodsToNodePorts(t, c, all) })
	t.Run("node-to-external-ips", func(t *testing.T) { testNodeToExternalIPs(t, c, all) })
	t.Run("session-affinity", func(t *testing.T) { testSessionAffinity(t, c) })
	t.Run("internal-traffic-policy-local", func(t *testing.T) { testInternalTrafficPolicyLocal(t, c) })
	t.Run("traffic-distribution", func(t *testing.T) { testTrafficDistribution(t, c) })
	t.Run("nodeport-isolation-every-address", func(t *testing.T) { testNodePortIsolationEveryAddress(t, c) })
	t.Run("healthcheck-nodeport", func(t *testing.T) { testHealthCheckNodePort(t, c) })
	t.Run("edgeplanectl-names-services", func(t *testing.T) {
		// The agent publishes the frontends' owners; edgeplanectl on the node names them.
		n := c.nodes[0]
		ctl := filepath.Join(c.lab.Config().EdgeplaneBin, "edgeplanectl")
		deadline := time.Now().Add(waitLimit)
		for {
			out, err := n.Netns.Exec(t.Context(), ctl, "--bpffs-root", n.BPFFS, "--run-dir", n.RunDir, "services", "--service", "default/web")
			if err == nil && strings.Contains(out, svc.Spec.ClusterIP+":80/tcp") && strings.Contains(out, "default/web-n1") {
				t.Logf("edgeplanectl services --service default/web:\n%s", out)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("edgeplanectl services: %v\n%s", err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

func nodePortOf(svc *corev1.Service, i int) uint16 { return uint16(svc.Spec.Ports[i].NodePort) }

// testNodePortCluster: externalTrafficPolicy Cluster from the outside host. Every node's node port
// reaches every backend, over TCP and UDP: the local one with the client's address, remote ones
// with the source translated to the node's overlay address and the reply coming back through it.
func testNodePortCluster(t *testing.T, c *cluster, all func(map[string]int) bool) {
	svc := c.webService(t, "np-cluster", lab.ServiceOptions{Type: corev1.ServiceTypeNodePort})
	for _, n := range c.nodes {
		tcp := answers(t, c.lab.Outside, corev1.ProtocolTCP, netip.AddrPortFrom(n.IP, nodePortOf(svc, 0)), 30, all)
		udp := answers(t, c.lab.Outside, corev1.ProtocolUDP, netip.AddrPortFrom(n.IP, nodePortOf(svc, 1)), 30, all)
		t.Logf("outside -> %s:%d: TCP %s, UDP %s", n.Name, nodePortOf(svc, 0), lab.FormatCounts(tcp), lab.FormatCounts(udp))
	}
	// The echo port: a connection keeps its backend for several exchanges.
	conn, err := lab.DialTCP(c.lab.Outside, netip.AddrPortFrom(c.nodes[0].IP, nodePortOf(svc, 2)), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := 0; i < 5; i++ {
		if err := echoOnce(conn); err != nil {
			t.Fatalf("exchange %d on one connection through n1's node port: %v", i, err)
		}
	}
}

// testNodePortLocal: externalTrafficPolicy Local. A node's port reaches only its own backend, which
// sees the outside host's real address.
func testNodePortLocal(t *testing.T, c *cluster) {
	svc := c.webService(t, "np-local", lab.ServiceOptions{
		Type:                  corev1.ServiceTypeNodePort,
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
	})
	for i, n := range c.nodes {
		own := exactly(c.web[i].Name)
		tcp := answers(t, c.lab.Outside, corev1.ProtocolTCP, netip.AddrPortFrom(n.IP, nodePortOf(svc, 0)), 10, own)
		udp := answers(t, c.lab.Outside, corev1.ProtocolUDP, netip.AddrPortFrom(n.IP, nodePortOf(svc, 1)), 10, own)
		t.Logf("outside -> %s:%d: TCP %s, UDP %s", n.Name, nodePortOf(svc, 0), lab.FormatCounts(tcp), lab.FormatCounts(udp))
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			port := nodePortOf(svc, 0)
			if proto == corev1.ProtocolUDP {
				port = nodePortOf(svc, 1)
			}
			_, seen, err := lab.AskHostname(c.lab.Outside, proto, netip.AddrPortFrom(n.IP, port), 2*time.Second)
			if err != nil || seen.Addr() != lab.OutsideIP {
				t.Errorf("%s backend on %s saw %v (%v), want the outside host's %v", proto, n.Name, seen, err, lab.OutsideIP)
			}
		}
	}
}

// testLoadBalancerIP: a LoadBalancer Service's ingress IP (set as the cloud's controller would)
// and an externalIP, both routed by the outside host through n1, reach all backends.
func testLoadBalancerIP(t *testing.T, c *cluster, all func(map[string]int) bool) {
	ctx := t.Context()
	lbIP := lab.LoadBalancerNet.Addr().Next().Next()              // 198.51.100.2
	externalIP := lab.LoadBalancerNet.Addr().Next().Next().Next() // 198.51.100.3
	c.webService(t, "lb", lab.ServiceOptions{Type: corev1.ServiceTypeLoadBalancer})
	if _, err := c.lab.SetLoadBalancerIngress(ctx, "lb", lbIP); err != nil {
		t.Fatal(err)
	}
	c.webService(t, "external", lab.ServiceOptions{ExternalIPs: []netip.Addr{externalIP}})
	via := c.nodes[0].IP.String()
	if _, err := c.lab.Outside.IP(ctx, "route", "replace", lab.LoadBalancerNet.String(), "via", via); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.lab.Outside.IP(context.Background(), "route", "del", lab.LoadBalancerNet.String()) })
	for _, dst := range []netip.Addr{lbIP, externalIP} {
		tcp := answers(t, c.lab.Outside, corev1.ProtocolTCP, netip.AddrPortFrom(dst, 80), 30, all)
		udp := answers(t, c.lab.Outside, corev1.ProtocolUDP, netip.AddrPortFrom(dst, 53), 30, all)
		t.Logf("outside -> %v via n1: TCP %s, UDP %s", dst, lab.FormatCounts(tcp), lab.FormatCounts(udp))
	}
}

// echoOnce sends a line on an echo connection and reads the answer.
func echoOnce(conn net.Conn) error {
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return err
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "ping ") {
		return fmt.Errorf("answer %q", buf[:n])
	}
	return nil
}

// testNodePortIsolation: nodeport.openyurt.io/listen=pool-a. n3 (pool-b) must not listen: it drops
// the Service's node port on arrival (node_ingress on the lab's veth NIC), counted as
// NODEPORT_CLOSED; a live annotation change opens it.
func testNodePortIsolation(t *testing.T, c *cluster) {
	svc := c.webService(t, "isolated", lab.ServiceOptions{
		Type:        corev1.ServiceTypeNodePort,
		Annotations: map[string]string{"nodeport.openyurt.io/listen": "pool-a"},
		Ports:       []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolTCP}},
	})
	nodePort := uint16(svc.Spec.Ports[0].NodePort)
	n3 := c.nodes[2]
	probe := func(n *lab.Node) (closed bool) {
		t.Helper()
		before := nodePortDrops(t, n)
		_, _ = lab.TCPEcho(c.lab.Outside, netip.AddrPortFrom(n.IP, nodePort), 300*time.Millisecond)
		return nodePortDrops(t, n) > before
	}
	deadline := time.Now().Add(waitLimit)
	for !probe(n3) {
		if time.Now().After(deadline) {
			t.Fatal("n3 (pool-b) never dropped the isolated node port")
		}
	}
	for _, n := range c.nodes[:2] {
		if probe(n) {
			t.Errorf("%s (pool-a) dropped its own pool's node port", n.Name)
		}
		// Listening means answering: from every backend, whatever pool it is in.
		counts := answers(t, c.lab.Outside, corev1.ProtocolTCP, netip.AddrPortFrom(n.IP, nodePort), 30,
			exactly("web-n1", "web-n2", "web-n3"))
		t.Logf("outside -> %s:%d (pool-a): %s", n.Name, nodePort, lab.FormatCounts(counts))
	}
	c.annotate(t, "isolated", "nodeport.openyurt.io/listen", "*")
	deadline = time.Now().Add(waitLimit)
	for probe(n3) {
		if time.Now().After(deadline) {
			t.Fatal("n3 kept dropping after listen=*")
		}
	}
	c.annotate(t, "isolated", "nodeport.openyurt.io/listen", "-pool-a,*")
	deadline = time.Now().Add(waitLimit)
	for !probe(c.nodes[0]) {
		if time.Now().After(deadline) {
			t.Fatal("n1 kept listening after listen=-pool-a,*")
		}
	}
	if probe(n3) {
		t.Error("n3 dropped after listen=-pool-a,*")
	}
	t.Logf("isolation matrix (pool-a | pool-b): listen=pool-a closed on n3 only; * open everywhere; -pool-a,* closed on n1, n2")
}
