package services

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	hostBackendPort = 8080 // where the host-network backends listen
	closedHostPort  = 8099 // where nothing listens on the nodes
	hostSinkPort    = 8081 // n1's TCP sink for the nodes' bulk transfer
)

// Services backed by host-network endpoints (kube-proxy serves these; e2e "[sig-network] Services
// should respect internalTrafficPolicy=Local Pod and Node, to Pod (hostNetwork: true)" and
// "Networking Granular Checks: Services should function for service endpoints using
// hostNetwork"): on each node a server in the node's netns on the node's address, named
// host-<node>, plus one on a second address of n1 (host-n1-second), as agents, host-network
// ingress controllers or the API server are. A pod reaches its own node's through pod_egress ->
// host stack -> the host's answer along the podIP/32 route -> pod_ingress, which gives the answer
// the frontend's address back; the other node's through the masquerade on the NIC. The nodes
// themselves reach their own through the host-hairpin address (overlay_egress).
func TestHostNetworkBackends(t *testing.T) {
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-domains", Namespace: "kube-system"},
		Data: map[string]string{domain.ConfigKey: "defaultConnectivity: private\n"}}
	if _, err := l.Client.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var nodes []*lab.Node
	var clients []*lab.Pod
	for i := range 2 {
		n, err := l.AddNode(ctx, fmt.Sprintf("n%d", i+1), i+1, lab.NodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		srv, err := lab.ServeHostnameAt(n.Netns, "host-"+n.Name, netip.AddrPortFrom(n.IP, hostBackendPort))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		cl, err := l.AddPod(ctx, n, "client-"+n.Name, lab.PodOptions{})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl)
	}
	n1, n2 := nodes[0], nodes[1]
	second := secondaryIP(n1)
	prefix := netip.PrefixFrom(second, lab.UnderlayNet.Bits()).String()
	if _, err := n1.Netns.IP(ctx, "addr", "add", prefix, "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	srv, err := lab.ServeHostnameAt(n1.Netns, "host-n1-second", netip.AddrPortFrom(second, hostBackendPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	hostService := func(t *testing.T, name string, policy corev1.ServiceInternalTrafficPolicy, hosts ...lab.HostEndpoint) *corev1.Service {
		t.Helper()
		svc, err := l.CreateService(t.Context(), name, lab.ServiceOptions{
			InternalTrafficPolicy: policy,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt(hostBackendPort), Protocol: corev1.ProtocolTCP},
				{Name: "dns", Port: 53, TargetPort: intstr.FromInt(hostBackendPort), Protocol: corev1.ProtocolUDP},
				{Name: "closed", Port: 54, TargetPort: intstr.FromInt(closedHostPort), Protocol: corev1.ProtocolUDP},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.SetHostEndpoints(t.Context(), svc, hosts...); err != nil {
			t.Fatal(err)
		}
		return svc
	}
	both := []lab.HostEndpoint{{Addr: n1.IP, Node: n1}, {Addr: n2.IP, Node: n2}}

	t.Run("cluster-policy", func(t *testing.T) {
		svc := hostService(t, "hostnet", corev1.ServiceInternalTrafficPolicyCluster, both...)
		for _, cl := range clients {
			for _, tc := range []struct {
				proto corev1.Protocol
				port  uint16
			}{{corev1.ProtocolTCP, 80}, {corev1.ProtocolUDP, 53}} {
				counts := answers(t, cl.Netns, tc.proto, vip(svc, tc.port), 30, exactly("host-n1", "host-n2"))
				t.Logf("%s %s: %s", cl.Name, tc.proto, lab.FormatCounts(counts))
			}
		}
		// The host-network backend sees the pod's own address: no SNAT on the node.
		for range 20 {
			name, seen, err := lab.AskHostname(clients[0].Netns, corev1.ProtocolTCP, vip(svc, 80), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if name == "host-n1" {
				if seen.Addr() != clients[0].IP {
					t.Errorf("host-n1 saw %v, want client-n1's %v", seen, clients[0].IP)
				}
				break
			}
		}
	})

	t.Run("local-policy", func(t *testing.T) {
		svc := hostService(t, "hostnet-local", corev1.ServiceInternalTrafficPolicyLocal, both...)
		for i, cl := range clients {
			own := exactly("host-" + nodes[i].Name)
			tcp := answers(t, cl.Netns, corev1.ProtocolTCP, vip(svc, 80), 10, own)
			udp := answers(t, cl.Netns, corev1.ProtocolUDP, vip(svc, 53), 10, own)
			t.Logf("%s: TCP %s, UDP %s", cl.Name, lab.FormatCounts(tcp), lab.FormatCounts(udp))
		}
	})

	t.Run("other-node-address", func(t *testing.T) {
		// A backend on n1's second address: the host answers from that address.
		svc := hostService(t, "hostnet-second", corev1.ServiceInternalTrafficPolicyCluster, lab.HostEndpoint{Addr: second, Node: n1})
		for _, cl := range clients {
			tcp := answers(t, cl.Netns, corev1.ProtocolTCP, vip(svc, 80), 10, exactly("host-n1-second"))
			udp := answers(t, cl.Netns, corev1.ProtocolUDP, vip(svc, 53), 10, exactly("host-n1-second"))
			t.Logf("%s: TCP %s, UDP %s", cl.Name, lab.FormatCounts(tcp), lab.FormatCounts(udp))
		}
	})

	t.Run("from-the-nodes", func(t *testing.T) {
		// The node itself (a host process, a hostNetwork pod) as the client: overlay_egress hands
		// the connection to its own host stack from the host-hairpin address and translates the
		// host's answer to that address back. Before, it left through the NIC toward the node's
		// own address and timed out.
		only := map[string]*corev1.Service{}
		for _, n := range nodes {
			only[n.Name] = hostService(t, "hostnet-only-"+n.Name, corev1.ServiceInternalTrafficPolicyCluster, lab.HostEndpoint{Addr: n.IP, Node: n})
		}
		local := hostService(t, "hostnet-node-local", corev1.ServiceInternalTrafficPolicyLocal, both...)
		cluster := hostService(t, "hostnet-node-cluster", corev1.ServiceInternalTrafficPolicyCluster, both...)
		onSecond := hostService(t, "hostnet-node-second", corev1.ServiceInternalTrafficPolicyCluster, lab.HostEndpoint{Addr: second, Node: n1})
		for _, n := range nodes {
			own := exactly("host-" + n.Name)
			for _, tc := range []struct {
				proto corev1.Protocol
				port  uint16
			}{{corev1.ProtocolTCP, 80}, {corev1.ProtocolUDP, 53}} {
				alone := answers(t, n.Netns, tc.proto, vip(only[n.Name], tc.port), 10, own)
				loc := answers(t, n.Netns, tc.proto, vip(local, tc.port), 10, own)
				all := answers(t, n.Netns, tc.proto, vip(cluster, tc.port), 30, exactly("host-n1", "host-n2"))
				t.Logf("%s %s: own backend only %s, Local %s, Cluster %s", n.Name, tc.proto,
					lab.FormatCounts(alone), lab.FormatCounts(loc), lab.FormatCounts(all))
			}
			// The backend sees the host-hairpin address, as a pod reaching itself sees 169.254.42.1.
			name, seen, err := lab.AskHostname(n.Netns, corev1.ProtocolTCP, vip(only[n.Name], 80), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if name != "host-"+n.Name || seen.Addr() != datapath.HostHairpinIP {
				t.Errorf("%s: %s saw %v, want host-%s seeing %v", n.Name, name, seen, n.Name, datapath.HostHairpinIP)
			}
		}
		tcp := answers(t, n1.Netns, corev1.ProtocolTCP, vip(onSecond, 80), 10, exactly("host-n1-second"))
		udp := answers(t, n1.Netns, corev1.ProtocolUDP, vip(onSecond, 53), 10, exactly("host-n1-second"))
		t.Logf("n1 to its second address: TCP %s, UDP %s", lab.FormatCounts(tcp), lab.FormatCounts(udp))

		// A bulk transfer: the host's GSO segments and the answers' ACKs both turned around.
		sink, err := lab.ServeTCPSink(n1.Netns, netip.AddrPortFrom(n1.IP, hostSinkPort))
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		bulk, err := l.CreateService(t.Context(), "hostnet-node-bulk", lab.ServiceOptions{
			Ports: []corev1.ServicePort{{Name: "bulk", Port: 80, TargetPort: intstr.FromInt(hostSinkPort), Protocol: corev1.ProtocolTCP}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.SetHostEndpoints(t.Context(), bulk, lab.HostEndpoint{Addr: n1.IP, Node: n1}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(waitLimit)
		for {
			took, err := lab.TCPSend(n1.Netns, vip(bulk, 80), 50<<20, 20*time.Second)
			if err == nil {
				t.Logf("n1 -> %v -> n1's host: 50 MiB in %v (%.0f Mbit/s)", vip(bulk, 80), took.Round(time.Millisecond),
					float64(50<<20*8)/took.Seconds()/1e6)
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}

		// Nothing listens on n1's closedHostPort: n1's port unreachable to the hairpin address
		// reaches n1's own socket, translated.
		deadline = time.Now().Add(waitLimit)
		for {
			_, _, err := lab.AskHostname(n1.Netns, corev1.ProtocolUDP, vip(only[n1.Name], 54), time.Second)
			if errors.Is(err, syscall.ECONNREFUSED) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("n1 -> %v (its own closed port): %v, want ECONNREFUSED", vip(only[n1.Name], 54), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("port-unreachable-from-the-host", func(t *testing.T) {
		// Nothing listens on n1's closedHostPort: n1's kernel answers the UDP request with ICMP
		// port unreachable quoting what it got (to n1's address), which pod_ingress translates, so
		// client-n1's socket sees the refusal instead of waiting for an answer.
		svc := hostService(t, "hostnet-closed", corev1.ServiceInternalTrafficPolicyCluster, lab.HostEndpoint{Addr: n1.IP, Node: n1})
		deadline := time.Now().Add(waitLimit)
		for {
			_, _, err := lab.AskHostname(clients[0].Netns, corev1.ProtocolUDP, vip(svc, 54), time.Second)
			if errors.Is(err, syscall.ECONNREFUSED) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client-n1 -> %v (n1's closed port): %v, want ECONNREFUSED", vip(svc, 54), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
