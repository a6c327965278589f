package services

// The datapath gaps of Services closed after the first NodePort work (docs/services.md: Traffic
// from outside the cluster, Pods reaching node ports, Host traffic): a remote backend's ICMP errors
// and GRO aggregates toward an outside client, pods reaching node ports, the node reaching
// externalIPs and LoadBalancer IPs.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	bulkPort   = 9100
	silentPort = 9101 // nothing listens here in the gap pod
	bulkSize   = 16 << 20
)

// gapPod adds a pod on node labelled app=<name> (a Service selecting it has one backend there)
// that streams bulkSize bytes to every TCP connection on bulkPort.
func (c *cluster) gapPod(t *testing.T, node *lab.Node, name string) *lab.Pod {
	t.Helper()
	p, err := c.lab.AddPod(t.Context(), node, name, lab.PodOptions{Labels: map[string]string{"app": name}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background()) }) // t.Context() is done by then
	var ln net.Listener
	if err := lab.InNetns(p.Netns, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(p.IP, bulkPort).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	chunk := make([]byte, 256<<10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				for sent := 0; sent < bulkSize; sent += len(chunk) {
					if _, err := conn.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// download reads everything the bulk server behind dst sends.
func download(ns lab.Netns, dst netip.AddrPort, timeout time.Duration) (int64, time.Duration, error) {
	conn, err := lab.DialTCP(ns, dst, 2*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetDeadline(start.Add(timeout))
	n, err := io.Copy(io.Discard, conn)
	return n, time.Since(start), err
}

// testNodePortRemoteBackendErrorsAndBulk: a NodePort whose only backend is on n2, reached from the
// outside host through n1. The backend's port unreachable for a UDP port nobody listens on must
// reach the client as one about its own packet (ECONNREFUSED at once, not a timeout), and a bulk
// TCP download, whose segments cross the tunnel as GSO packets that only the kernel VXLAN device
// can decapsulate on this kernel, must arrive whole.
func testNodePortRemoteBackendErrorsAndBulk(t *testing.T, c *cluster) {
	n1, n2 := c.nodes[0], c.nodes[1]
	c.gapPod(t, n2, "gap-remote")
	svc, err := c.lab.CreateService(t.Context(), "gap-remote", lab.ServiceOptions{
		Type:     corev1.ServiceTypeNodePort,
		Selector: map[string]string{"app": "gap-remote"},
		Ports: []corev1.ServicePort{
			{Name: "bulk", Port: 80, TargetPort: intstr.FromInt(bulkPort), Protocol: corev1.ProtocolTCP},
			{Name: "silent", Port: 53, TargetPort: intstr.FromInt(silentPort), Protocol: corev1.ProtocolUDP},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.lab.DeleteService(context.Background(), "gap-remote") })
	if _, err := c.lab.WaitReadyEndpoints(t.Context(), "gap-remote", 1, waitLimit); err != nil {
		t.Fatal(err)
	}
	bulk := netip.AddrPortFrom(n1.IP, nodePortOf(svc, 0))
	silent := netip.AddrPortFrom(n1.IP, nodePortOf(svc, 1))

	// A UDP socket on n1's host holding the node port: were the datagram not translated, it would
	// land there silently instead of drawing n1's own port unreachable, so only the backend's
	// error, translated, can refuse the client.
	holder, err := lab.ListenUDP(n1.Netns, netip.AddrPortFrom(netip.IPv4Unspecified(), silent.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()

	t.Run("bulk-download-through-the-tunnel", func(t *testing.T) {
		deadline := time.Now().Add(waitLimit)
		for {
			n, took, err := download(c.lab.Outside, bulk, 10*time.Second)
			if err == nil && n == bulkSize {
				t.Logf("outside <- %v <- web on n2: %d MiB in %v (%.0f Mbit/s)", bulk, n>>20, took.Round(time.Millisecond),
					float64(n*8)/took.Seconds()/1e6)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("download through %v: %d of %d bytes after %v: %v", bulk, n, bulkSize, took.Round(time.Millisecond), err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("port-unreachable-from-the-backend", func(t *testing.T) {
		for i := range 5 {
			conn, err := lab.DialUDP(c.lab.Outside, silent, false)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = conn.SetDeadline(start.Add(2 * time.Second))
			_, _ = conn.Write([]byte("anyone?"))
			_, err = conn.Read(make([]byte, 64))
			took := time.Since(start)
			conn.Close()
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("attempt %d: %v after %v, want ECONNREFUSED (the backend's port unreachable)", i, err, took.Round(time.Millisecond))
			}
			if i == 0 {
				t.Logf("outside -> %v (backend on n2, nothing listening): refused in %v", silent, took.Round(time.Microsecond))
			}
		}
	})
}

// testPodsToNodePorts: every client pod reaches every backend through every node's IP and node
// port, its own node's (translated in pod_egress) and the others' (through the host, masqueraded,
// translated by that node's node_ingress), as with kube-proxy. NodePort isolation still holds: a
// node that does not listen stays closed, to pods as to the outside.
func testPodsToNodePorts(t *testing.T, c *cluster, all func(map[string]int) bool) {
	svc := c.webService(t, "np-pods", lab.ServiceOptions{Type: corev1.ServiceTypeNodePort})
	for _, cl := range c.clients {
		for _, n := range c.nodes {
			tcp := answers(t, cl.Netns, corev1.ProtocolTCP, netip.AddrPortFrom(n.IP, nodePortOf(svc, 0)), 30, all)
			udp := answers(t, cl.Netns, corev1.ProtocolUDP, netip.AddrPortFrom(n.IP, nodePortOf(svc, 1)), 30, all)
			t.Logf("%s -> %s:%d: TCP %s, UDP %s", cl.Name, n.Name, nodePortOf(svc, 0), lab.FormatCounts(tcp), lab.FormatCounts(udp))
		}
	}
	// The backend on the client's node sees the pod's own address through its node's port.
	_, seen, err := lab.AskHostname(c.clients[0].Netns, corev1.ProtocolTCP, netip.AddrPortFrom(c.nodes[0].IP, nodePortOf(svc, 0)), 2*time.Second)
	if err != nil || seen.Addr() != c.clients[0].IP {
		t.Errorf("backend saw %v (%v), want the client pod's %v", seen, err, c.clients[0].IP)
	}

	iso := c.webService(t, "np-pods-isolated", lab.ServiceOptions{
		Type:        corev1.ServiceTypeNodePort,
		Annotations: map[string]string{"nodeport.openyurt.io/listen": "pool-b"}, // n3 only
		Ports:       []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(hostnamePort), Protocol: corev1.ProtocolTCP}},
	})
	port := nodePortOf(iso, 0)
	n1, n3 := c.nodes[0], c.nodes[2]
	// Open on n3, from n3's pod and from n1's.
	answers(t, c.clients[2].Netns, corev1.ProtocolTCP, netip.AddrPortFrom(n3.IP, port), 10, all)
	answers(t, c.clients[0].Netns, corev1.ProtocolTCP, netip.AddrPortFrom(n3.IP, port), 10, all)
	// Closed on n1, for its own pod and for n3's.
	for _, cl := range []*lab.Pod{c.clients[0], c.clients[2]} {
		start := time.Now()
		if name, _, err := lab.AskHostname(cl.Netns, corev1.ProtocolTCP, netip.AddrPortFrom(n1.IP, port), time.Second); err == nil {
			t.Errorf("%s reached %s through n1's closed node port", cl.Name, name)
		} else {
			t.Logf("%s -> n1:%d (closed): %v after %v", cl.Name, port, err, time.Since(start).Round(time.Millisecond))
		}
	}
}

// testNodeToExternalIPs: the node itself reaches a LoadBalancer ingress IP and an externalIP
// (routed into edgeplane.1 by the agent and translated by overlay_egress like a ClusterIP), and
// the routes go with the addresses.
func testNodeToExternalIPs(t *testing.T, c *cluster, all func(map[string]int) bool) {
	ctx := t.Context()
	a := lab.LoadBalancerNet.Addr().As4()
	a[3] = 8
	lbIP := netip.AddrFrom4(a) // 198.51.100.8
	externalIP := lbIP.Next()  // 198.51.100.9
	c.webService(t, "gap-lb", lab.ServiceOptions{Type: corev1.ServiceTypeLoadBalancer})
	t.Cleanup(func() { _ = c.lab.DeleteService(context.Background(), "gap-lb") })
	if _, err := c.lab.SetLoadBalancerIngress(ctx, "gap-lb", lbIP); err != nil {
		t.Fatal(err)
	}
	c.webService(t, "gap-external", lab.ServiceOptions{ExternalIPs: []netip.Addr{externalIP}})
	for _, n := range c.nodes {
		for _, dst := range []netip.Addr{lbIP, externalIP} {
			tcp := answers(t, n.Netns, corev1.ProtocolTCP, netip.AddrPortFrom(dst, 80), 30, all)
			udp := answers(t, n.Netns, corev1.ProtocolUDP, netip.AddrPortFrom(dst, 53), 30, all)
			t.Logf("%s's host -> %v: TCP %s, UDP %s", n.Name, dst, lab.FormatCounts(tcp), lab.FormatCounts(udp))
		}
	}
	// The externalIP goes away: so does its route (the node reaches it as before, i.e. not).
	if err := c.lab.DeleteService(ctx, "gap-external"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for {
		out, err := c.nodes[0].Netns.IP(ctx, "-4", "route", "show", "exact", externalIP.String()+"/32")
		if err == nil && strings.TrimSpace(out) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("route to %v still there after the Service went: %q (%v)", externalIP, out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
