package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestServices runs the real kube-controller-manager and kube-proxy against the lab API server, on
// a node without edgeplane (bridge CNI): the EndpointSlice controller lists two lab pods for a
// Service selecting them (named target ports resolved, ready), a pod whose Ready condition drops
// leaves the ready set and comes back, and kube-proxy's iptables rules on the node carry a pod's
// TCP and UDP flows to the cluster IP, to the load-balancer IP the harness publishes and to the
// node port, spread
// over both backends and then only the ready one; deleting the Service deletes its slices (garbage
// collector) and its rules. Nothing outside the lab changes: the root
// namespace's netfilter, bridge and forwarding sysctls and the conntrack hash size are the same
// after the test.
func TestServices(t *testing.T) {
	cfg := harnessConfig(t)
	sysctlsBefore := hostNetSysctls(t)
	t.Cleanup(func() {
		after := hostNetSysctls(t)
		for k, v := range sysctlsBefore {
			if after[k] != v {
				t.Errorf("host sysctl %s changed: %q -> %q", k, v, after[k])
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	l := newCheckedLab(t, ctx, cfg)

	// The controller manager comes up while the node is built.
	kcmErr := make(chan error, 1)
	go func() {
		_, err := l.StartControllerManager(ctx, ControllerManagerOptions{})
		kcmErr <- err
	}()
	n, err := l.AddNode(ctx, "kp1", 1, NodeOptions{NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.UseBridgeCNI(n); err != nil {
		t.Fatal(err)
	}
	kp, err := l.StartKubeProxy(ctx, n, KubeProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ports := []corev1.ContainerPort{
		{Name: "hostname", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
		{Name: "hostname-udp", ContainerPort: 8080, Protocol: corev1.ProtocolUDP},
	}
	var web []*Pod
	for _, name := range []string{"web-1", "web-2"} {
		p, err := l.AddPod(ctx, n, name, PodOptions{Labels: map[string]string{"app": "web"}, Ports: ports})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := p.ServeHostname(8080)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		web = append(web, p)
	}
	client, err := l.AddPod(ctx, n, "client", PodOptions{Labels: map[string]string{"app": "client"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-kcmErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("lab, controller manager, kube-proxy node and 3 pods ready after %v", time.Since(start).Round(time.Millisecond))

	svc, err := l.CreateService(ctx, "web", ServiceOptions{
		Type:     corev1.ServiceTypeLoadBalancer,
		Selector: map[string]string{"app": "web"},
		Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("hostname"), Protocol: corev1.ProtocolTCP},
			{Name: "echo-udp", Port: 53, TargetPort: intstr.FromString("hostname-udp"), Protocol: corev1.ProtocolUDP},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	clusterIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	tcpVIP, udpVIP := netip.AddrPortFrom(clusterIP, 80), netip.AddrPortFrom(clusterIP, 53)
	want := []netip.AddrPort{netip.AddrPortFrom(web[0].IP, 8080), netip.AddrPortFrom(web[1].IP, 8080)}
	slices.SortFunc(want, netip.AddrPort.Compare)

	if !t.Run("endpointslices", func(t *testing.T) {
		created := time.Now()
		eps, err := l.WaitReadyEndpoints(ctx, "web", 2, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("EndpointSlice with 2 ready endpoints %v after the Service was created", time.Since(created).Round(time.Millisecond))
		sl, err := l.EndpointSlices(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sl {
			if got := s.Labels[discoveryv1.LabelManagedBy]; got != "endpointslice-controller.k8s.io" {
				t.Errorf("slice %s managed by %q", s.Name, got)
			}
			if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Kind != "Service" || s.OwnerReferences[0].UID != svc.UID {
				t.Errorf("slice %s owners %v, want Service web", s.Name, s.OwnerReferences)
			}
			var got []string
			for _, p := range s.Ports {
				got = append(got, fmt.Sprintf("%s/%d/%s", deref(p.Name), deref(p.Port), deref(p.Protocol)))
			}
			slices.Sort(got)
			if w := []string{"echo-udp/8080/UDP", "http/8080/TCP"}; !slices.Equal(got, w) {
				t.Errorf("slice %s ports %v, want %v (named target ports resolved)", s.Name, got, w)
			}
		}
		byIP := map[string]discoveryv1.Endpoint{}
		for _, ep := range eps {
			for _, a := range ep.Addresses {
				byIP[a] = ep
			}
		}
		for _, p := range web {
			ep, ok := byIP[p.IP.String()]
			switch {
			case !ok:
				t.Errorf("pod %s (%s) not in %s", p.Name, p.IP, FormatEndpoints(eps))
			case ep.TargetRef == nil || ep.TargetRef.Name != p.Name || deref(ep.NodeName) != n.Name:
				t.Errorf("endpoint %s: %s, want pod %s on %s", p.IP, FormatEndpoints([]discoveryv1.Endpoint{ep}), p.Name, n.Name)
			case !deref(ep.Conditions.Ready) || !deref(ep.Conditions.Serving) || deref(ep.Conditions.Terminating):
				t.Errorf("endpoint %s: %s, want ready, serving, not terminating", p.IP, FormatEndpoints([]discoveryv1.Endpoint{ep}))
			}
		}
		if len(eps) != 2 {
			t.Errorf("endpoints %s, want the 2 web pods only", FormatEndpoints(eps))
		}
	}) {
		return
	}

	spread := func(t *testing.T, dst netip.AddrPort, proto corev1.Protocol, n int, names ...string) {
		t.Helper()
		counts, err := CountHostnames(client.Netns, proto, dst, n, 2*time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", proto, dst, err)
		}
		for _, name := range names {
			if counts[name] == 0 {
				t.Errorf("%s %s: %s answered none of %d: %s", proto, dst, name, n, FormatCounts(counts))
			}
		}
		if len(counts) != len(names) {
			t.Errorf("%s %s: answers %s, want only %v", proto, dst, FormatCounts(counts), names)
		}
		t.Logf("%s %s: %s", proto, dst, FormatCounts(counts))
	}

	if !t.Run("kube-proxy", func(t *testing.T) {
		for _, vip := range []struct {
			proto corev1.Protocol
			dst   netip.AddrPort
		}{{corev1.ProtocolTCP, tcpVIP}, {corev1.ProtocolUDP, udpVIP}} {
			got, err := kp.WaitBackends(ctx, vip.proto, vip.dst, 2, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s %s backends %v, want %v", vip.proto, vip.dst, got, want)
			}
		}
		rules, err := kp.NATRules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rules, `"default/web:http cluster IP"`) || !strings.Contains(rules, ":KUBE-SVC-") {
			t.Errorf("no KUBE-SVC chain for default/web:http in the nat table of %s:\n%s", n.Name, rules)
		}
		// A pod's flow keeps its source through the Service (no masquerade inside the cluster CIDR).
		name, seen, err := AskHostname(client.Netns, corev1.ProtocolTCP, tcpVIP, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if seen.Addr() != client.IP {
			t.Errorf("%s saw the client as %s, want the client pod's %s", name, seen, client.IP)
		}
		spread(t, tcpVIP, corev1.ProtocolTCP, 24, "web-1", "web-2")
		spread(t, udpVIP, corev1.ProtocolUDP, 24, "web-1", "web-2")
	}) {
		return
	}

	t.Run("load-balancer-and-node-port", func(t *testing.T) {
		lbIP := netip.MustParseAddr("198.51.100.10")
		if !LoadBalancerNet.Contains(lbIP) {
			t.Fatalf("%s is not in LoadBalancerNet %s", lbIP, LoadBalancerNet)
		}
		got, err := l.SetLoadBalancerIngress(ctx, "web", lbIP)
		if err != nil {
			t.Fatal(err)
		}
		if ing := got.Status.LoadBalancer.Ingress; len(ing) != 1 || ing[0].IP != lbIP.String() {
			t.Fatalf("status.loadBalancer.ingress %v, want %s", ing, lbIP)
		}
		lb := netip.AddrPortFrom(lbIP, 80)
		if _, err := kp.WaitBackends(ctx, corev1.ProtocolTCP, lb, 2, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		spread(t, lb, corev1.ProtocolTCP, 16, "web-1", "web-2")

		// The node port kube-proxy opens on the node's address, reached from the pod.
		np := netip.AddrPortFrom(n.IP, uint16(svc.Spec.Ports[0].NodePort))
		if _, err := kp.WaitBackends(ctx, corev1.ProtocolTCP, np, 2, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		spread(t, np, corev1.ProtocolTCP, 16, "web-1", "web-2")
	})

	t.Run("not-ready", func(t *testing.T) {
		changed := time.Now()
		if err := web[1].SetReady(ctx, false); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitEndpointSlices(ctx, "web", 30*time.Second, func(sl []discoveryv1.EndpointSlice) error {
			eps := SliceEndpoints(sl)
			for _, ep := range eps {
				if slices.Contains(ep.Addresses, web[1].IP.String()) {
					if ep.Conditions.Ready == nil || *ep.Conditions.Ready || ep.Conditions.Serving == nil || *ep.Conditions.Serving {
						return fmt.Errorf("web-2 still ready or serving: %s", FormatEndpoints(eps))
					}
					if ready := countReady(eps); ready != 1 {
						return fmt.Errorf("%d ready endpoints, want 1: %s", ready, FormatEndpoints(eps))
					}
					return nil
				}
			}
			return fmt.Errorf("web-2 no longer listed at all (a not-ready pod stays, not ready): %s", FormatEndpoints(eps))
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("web-2 not ready in the slice %v after its Ready condition dropped", time.Since(changed).Round(time.Millisecond))
		got, err := kp.WaitBackends(ctx, corev1.ProtocolTCP, tcpVIP, 1, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != netip.AddrPortFrom(web[0].IP, 8080) {
			t.Errorf("backends %v, want web-1 only", got)
		}
		t.Logf("kube-proxy rules down to web-1 %v after the Ready condition dropped", time.Since(changed).Round(time.Millisecond))
		spread(t, tcpVIP, corev1.ProtocolTCP, 8, "web-1")
		if _, err := kp.WaitBackends(ctx, corev1.ProtocolUDP, udpVIP, 1, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		spread(t, udpVIP, corev1.ProtocolUDP, 8, "web-1")

		if err := web[1].SetReady(ctx, true); err != nil {
			t.Fatal(err)
		}
		if _, err := l.WaitReadyEndpoints(ctx, "web", 2, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := kp.WaitBackends(ctx, corev1.ProtocolTCP, tcpVIP, 2, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if err := l.DeleteService(ctx, "web"); err != nil {
			t.Fatal(err)
		}
		// The garbage collector deletes the slices through their owner reference.
		if _, err := l.WaitEndpointSlices(ctx, "web", 30*time.Second, func(sl []discoveryv1.EndpointSlice) error {
			if len(sl) > 0 {
				return fmt.Errorf("%d EndpointSlices left", len(sl))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := kp.WaitBackends(ctx, corev1.ProtocolTCP, tcpVIP, 0, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		t.Logf("kube-proxy log tail:\n%s\nkube-controller-manager log tail:\n%s", kp.LogTail(30), l.API.ControllerManager.LogTail(30))
	}
}

func countReady(eps []discoveryv1.Endpoint) int {
	n := 0
	for _, ep := range eps {
		if EndpointReady(ep) {
			n++
		}
	}
	return n
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// hostNetSysctls reads, in the test process's (root) namespace, the sysctls a Services dataplane
// could be tempted to change machine-wide: conntrack and netfilter (its ever-changing entry count
// aside), bridge netfilter, forwarding and route_localnet, and the conntrack hash size.
func hostNetSysctls(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	var files []string
	for _, glob := range []string{"/proc/sys/net/netfilter/*", "/proc/sys/net/bridge/*"} {
		m, _ := filepath.Glob(glob)
		files = append(files, m...)
	}
	files = append(files, "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/conf/all/route_localnet",
		"/sys/module/nf_conntrack/parameters/hashsize")
	for _, f := range files {
		if filepath.Base(f) == "nf_conntrack_count" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue // absent on this kernel, or not readable
		}
		out[f] = strings.TrimSpace(string(b))
	}
	if len(out) == 0 {
		t.Fatal("read none of the host's netfilter sysctls")
	}
	return out
}

// kubeProxyNAT is kube-proxy v1.37's nat table from TestServices (iptables-save, nf_tables
// backend): Service default/web with a TCP and a UDP port, two endpoints, a load-balancer IP and
// node ports, and the API server's kubernetes Service.
const kubeProxyNAT = `*nat
:KUBE-EXT-CDGGSHYLG3RE2FKL - [0:0]
:KUBE-SEP-2AZ33KU3V5PGPQZH - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-EXT-CDGGSHYLG3RE2FKL -m comment --comment "masquerade traffic for default/web:http external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-CDGGSHYLG3RE2FKL -j KUBE-SVC-CDGGSHYLG3RE2FKL
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODEPORTS -d 127.0.0.0/8 -p tcp -m comment --comment "default/web:http" -m tcp --dport 30876 -m nfacct --nfacct-name  localhost_nps_accepted_pkts -j KUBE-EXT-CDGGSHYLG3RE2FKL
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30876 -j KUBE-EXT-CDGGSHYLG3RE2FKL
-A KUBE-NODEPORTS -p udp -m comment --comment "default/web:echo-udp" -m udp --dport 31271 -j KUBE-EXT-NPP7BK534SLVLNLY
-A KUBE-SEP-2AZ33KU3V5PGPQZH -s 10.244.1.3/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-2AZ33KU3V5PGPQZH -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 10.244.1.3:8080
-A KUBE-SEP-34JXUS5IPKRS7CTC -p udp -m comment --comment "default/web:echo-udp" -m udp -j DNAT --to-destination 10.244.1.2:8080
-A KUBE-SEP-4OCHKLSQSO5FBXFV -p tcp -m comment --comment "default/kubernetes:https" -m tcp -j DNAT --to-destination 172.30.0.2:6443
-A KUBE-SEP-UIQK3OSOSTRHRPBX -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT --to-destination 10.244.1.2:8080
-A KUBE-SERVICES -d 10.99.23.17/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-CDGGSHYLG3RE2FKL
-A KUBE-SERVICES -d 198.51.100.10/32 -p tcp -m comment --comment "default/web:http loadbalancer IP" -m tcp --dport 80 -j KUBE-EXT-CDGGSHYLG3RE2FKL
-A KUBE-SERVICES -d 10.99.23.17/32 -p udp -m comment --comment "default/web:echo-udp cluster IP" -m udp --dport 53 -j KUBE-SVC-NPP7BK534SLVLNLY
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-CDGGSHYLG3RE2FKL ! -s 10.244.0.0/16 -d 10.99.23.17/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.1.2:8080" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-UIQK3OSOSTRHRPBX
-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment "default/web:http -> 10.244.1.3:8080" -j KUBE-SEP-2AZ33KU3V5PGPQZH
-A KUBE-SVC-NPP7BK534SLVLNLY -m comment --comment "default/web:echo-udp -> 10.244.1.2:8080" -j KUBE-SEP-34JXUS5IPKRS7CTC
-A KUBE-SVC-NPX46M4PTMTKRN6Y -m comment --comment "default/kubernetes:https -> 172.30.0.2:6443" -j KUBE-SEP-4OCHKLSQSO5FBXFV
COMMIT
`

// TestNATBackends reads kube-proxy's rules the way KubeProxy.Backends does (no root needed).
func TestNATBackends(t *testing.T) {
	web := []netip.AddrPort{netip.MustParseAddrPort("10.244.1.2:8080"), netip.MustParseAddrPort("10.244.1.3:8080")}
	for _, tc := range []struct {
		proto    corev1.Protocol
		frontend string
		nodePort bool
		want     []netip.AddrPort
	}{
		{corev1.ProtocolTCP, "10.99.23.17:80", false, web},
		{corev1.ProtocolUDP, "10.99.23.17:53", false, web[:1]},
		{corev1.ProtocolTCP, "198.51.100.10:80", false, web},
		{corev1.ProtocolTCP, "172.30.0.11:30876", true, web},
		{corev1.ProtocolTCP, "127.0.0.1:30876", true, web},
		{corev1.ProtocolTCP, "10.96.0.1:443", false, []netip.AddrPort{netip.MustParseAddrPort("172.30.0.2:6443")}},
		{corev1.ProtocolUDP, "10.99.23.17:80", false, nil},    // wrong protocol
		{corev1.ProtocolTCP, "10.99.23.17:30876", false, nil}, // a node port only on node addresses
		{corev1.ProtocolTCP, "198.51.100.11:80", false, nil},
	} {
		got, err := natBackends(kubeProxyNAT, tc.proto, netip.MustParseAddrPort(tc.frontend), tc.nodePort)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s %s: backends %v, want %v", tc.proto, tc.frontend, got, tc.want)
		}
	}
	if _, err := ruleFields(`-A X -m comment --comment "unterminated -j Y`); err == nil {
		t.Error("an unterminated quote parsed")
	}
}
