package route

import (
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/routes"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// testServicesOverRoutePaths: Services, NodePort isolation and masquerade work over route-mode
// paths as over VXLAN (issue 16 item 2). A NodePort Service whose backend is on b3, behind the
// gateway: a1's pod reaches it through its ClusterIP; an outside client through a1's node port
// (node_lb translates and sends the packet to b3 unencapsulated, through the gateway, and the
// answer comes back the same way); a second Service that site-a's pool must not listen for
// (`nodeport.openyurt.io/listen: "-site-a"`) is dropped at a1's NIC as NODEPORT_CLOSED; and a1's
// pod's connection to the outside host arrives from a1's address (masqueraded).
func testServicesOverRoutePaths(t *testing.T, s *site) {
	ctx := t.Context()
	a1, b3, pa1 := s.nodes["a1"], s.nodes["b3"], s.pods["a1"]
	labels := map[string]string{"app": "web-route"}
	backend := addBackend(t, s.lab, b3, "web-b3", labels)
	ports := []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}
	open, err := s.lab.CreateService(ctx, "web-route", lab.ServiceOptions{Type: corev1.ServiceTypeNodePort, Selector: labels, Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	closed, err := s.lab.CreateService(ctx, "web-route-not-site-a", lab.ServiceOptions{Type: corev1.ServiceTypeNodePort,
		Selector: labels, Ports: ports, Annotations: map[string]string{"nodeport.openyurt.io/listen": "-" + lab.DomainSiteA}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{open.Name, closed.Name} {
		if _, err := s.lab.WaitReadyEndpoints(ctx, name, 1, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// ask retries for a while: the Service reaches the agents' maps a moment after its endpoints.
	ask := func(ns lab.Netns, dst netip.AddrPort) (string, netip.AddrPort, error) {
		var name string
		var seen netip.AddrPort
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if name, seen, err = lab.AskHostname(ns, corev1.ProtocolTCP, dst, time.Second); err == nil {
				break
			}
		}
		return name, seen, err
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(open.Spec.ClusterIP), 80)
	if name, _, err := ask(pa1.Netns, vip); err != nil || name != backend.Name {
		t.Errorf("a1's pod -> ClusterIP %s: answered by %q (%v), want %s", vip, name, err, backend.Name)
	}
	nodePort := netip.AddrPortFrom(a1.IP, uint16(open.Spec.Ports[0].NodePort))
	// a1 routes b3's pods directly once b3 announced its routes (make before break,
	// docs/domains.md): the earlier subtests leave time for it, a run of this one alone waits.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r, err := a1.Routes()
		if err == nil && r[b3.PodCIDR].Encap == routes.EncapDirect {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a1's route to b3's pod CIDR %s: %+v (%v); want direct", b3.PodCIDR, r[b3.PodCIDR], err)
		}
	}
	leg := watch(t, s.lab.Router(), lab.DomainSiteA) // the gateway's leg on a1's segment
	for range 4 {
		if name, _, err := ask(s.lab.Outside, nodePort); err != nil || name != backend.Name {
			t.Errorf("outside -> a1's node port %s: answered by %q (%v), want %s (on b3, through the gateway)", nodePort, name, err, backend.Name)
		}
	}
	// a1 sends the client's connection on from its overlay address (the source translation of
	// node_lb_to_remote), plain: route mode's path, not VXLAN.
	if st := leg.stop(); st.plain[[2]netip.Addr{a1.PodCIDR.Addr(), backend.IP}] == 0 || st.vxlan != 0 {
		t.Errorf("gateway's site-a leg: %v; want a1's overlay address %s to %s plain, and no VXLAN", st, a1.PodCIDR.Addr(), backend.IP)
	}

	// The closed node port: dropped without an answer at a1's NIC, and counted.
	before := nodePortClosed(t, a1)
	isolated := netip.AddrPortFrom(a1.IP, uint16(closed.Spec.Ports[0].NodePort))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, _, err := lab.AskHostname(s.lab.Outside, corev1.ProtocolTCP, isolated, 500*time.Millisecond)
		if err != nil && nodePortClosed(t, a1) > before {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("outside -> a1's node port %s of a Service site-a must not listen for: %v, NODEPORT_CLOSED +%d",
				isolated, err, nodePortClosed(t, a1)-before)
			break
		}
	}

	// Masquerade: a1's pod's connection to a host outside the cluster leaves from a1's address.
	outside := netip.AddrPortFrom(lab.OutsideIP, 8082)
	echo, err := lab.ServeTCPEcho(s.lab.Outside, outside)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	if seen, err := lab.TCPEcho(pa1.Netns, outside, 3*time.Second); err != nil || seen.Addr() != a1.IP {
		t.Errorf("a1's pod -> outside %s: the server saw %v (%v), want a1's address %s (masqueraded)", outside, seen, err, a1.IP)
	}
}

// addBackend starts the lab's kube-controller-manager (for EndpointSlices) and a ready pod on n
// with labels, answering its name on port 8080 (ServeHostname) until the test ends.
func addBackend(t *testing.T, l *lab.Lab, n *lab.Node, name string, labels map[string]string) *lab.Pod {
	t.Helper()
	ctx := t.Context()
	if _, err := l.StartControllerManager(ctx, lab.ControllerManagerOptions{}); err != nil {
		t.Fatal(err)
	}
	backend, err := l.AddPod(ctx, n, name, lab.PodOptions{Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	if err := backend.SetReady(ctx, true); err != nil {
		t.Fatal(err)
	}
	srv, err := backend.ServeHostname(8080)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return backend
}

// nodePortClosed is n's count of packets node_ingress (tc) and node_xdp dropped at a closed node
// port (NodePort isolation).
func nodePortClosed(t *testing.T, n *lab.Node) uint64 {
	t.Helper()
	m, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, dir := range []metricsmap.Dir{metricsmap.DirNodeIn, metricsmap.DirNodeXDP} {
		total += m[metricsmap.Key{Dir: dir, Reason: uint32(dropreason.NodePortClosed)}].Packets
	}
	return total
}
