package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// Services in the lab are real Service objects in PodNamespace. Their EndpointSlices come from
// the real EndpointSlice controller (StartControllerManager) selecting the lab's Pod objects,
// whose readiness the harness sets as kubelet would (Pod.SetReady). For LoadBalancer Services the
// harness plays the cloud's load-balancer controller and writes status.loadBalancer.ingress
// (SetLoadBalancerIngress). Backends answer with their pod's name (Pod.ServeHostname), so a test
// counts how connections spread over them (CountHostnames).

// LoadBalancerNet is where the harness, as the cloud, takes load-balancer ingress addresses from.
// Nothing in the lab routes it: only a Services dataplane on a node gives these addresses meaning.
var LoadBalancerNet = netip.MustParsePrefix("198.51.100.0/24")

// ServiceOptions describe a Service; zero values leave the API server's defaults.
type ServiceOptions struct {
	// Type is ClusterIP (default), NodePort or LoadBalancer.
	Type corev1.ServiceType
	// Ports are the Service's ports; targetPort may name a container port (PodOptions.Ports).
	Ports []corev1.ServicePort
	// Selector picks the backend pods by label (PodOptions.Labels). Without one the Service gets
	// no EndpointSlices from the controller.
	Selector    map[string]string
	Labels      map[string]string
	Annotations map[string]string
	// ExternalTrafficPolicy (Cluster or Local) applies to NodePort and LoadBalancer Services.
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy
	// InternalTrafficPolicy is Cluster or Local.
	InternalTrafficPolicy corev1.ServiceInternalTrafficPolicy
	// SessionAffinity is None or ClientIP, with SessionAffinityTimeout seconds (0: the default,
	// 3 hours).
	SessionAffinity        corev1.ServiceAffinity
	SessionAffinityTimeout int32
	ExternalIPs            []netip.Addr
	// TrafficDistribution is spec.trafficDistribution, e.g. "PreferClose".
	TrafficDistribution      string
	PublishNotReadyAddresses bool
}

// CreateService creates Service name in PodNamespace and returns it as the API server stored it
// (cluster IP, node ports allocated).
func (l *Lab) CreateService(ctx context.Context, name string, opts ServiceOptions) (*corev1.Service, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: PodNamespace, Labels: opts.Labels, Annotations: opts.Annotations},
		Spec: corev1.ServiceSpec{
			Type:                     opts.Type,
			Ports:                    opts.Ports,
			Selector:                 opts.Selector,
			ExternalTrafficPolicy:    opts.ExternalTrafficPolicy,
			SessionAffinity:          opts.SessionAffinity,
			PublishNotReadyAddresses: opts.PublishNotReadyAddresses,
		},
	}
	if opts.InternalTrafficPolicy != "" {
		svc.Spec.InternalTrafficPolicy = &opts.InternalTrafficPolicy
	}
	if opts.SessionAffinityTimeout > 0 {
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: &opts.SessionAffinityTimeout}}
	}
	for _, ip := range opts.ExternalIPs {
		svc.Spec.ExternalIPs = append(svc.Spec.ExternalIPs, ip.String())
	}
	if opts.TrafficDistribution != "" {
		svc.Spec.TrafficDistribution = &opts.TrafficDistribution
	}
	created, err := l.Client.CoreV1().Services(PodNamespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating Service %s: %w", name, err)
	}
	return created, nil
}

// UpdateService applies mutate to the current Service name (retrying on conflicts) and returns
// what the API server stored: annotation, policy or selector changes.
func (l *Lab) UpdateService(ctx context.Context, name string, mutate func(*corev1.Service)) (*corev1.Service, error) {
	c := l.Client.CoreV1().Services(PodNamespace)
	var out *corev1.Service
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := c.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(svc)
		out, err = c.Update(ctx, svc, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("updating Service %s: %w", name, err)
	}
	return out, nil
}

// DeleteService deletes Service name; its EndpointSlices go with it when the controller manager
// runs the garbage collector (DefaultControllers).
func (l *Lab) DeleteService(ctx context.Context, name string) error {
	if err := l.Client.CoreV1().Services(PodNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("deleting Service %s: %w", name, err)
	}
	return nil
}

// SetLoadBalancerIngress writes status.loadBalancer.ingress of Service name, as the cloud's
// load-balancer controller does once it has provisioned the addresses (LoadBalancerNet). No
// addresses clears it.
func (l *Lab) SetLoadBalancerIngress(ctx context.Context, name string, ips ...netip.Addr) (*corev1.Service, error) {
	c := l.Client.CoreV1().Services(PodNamespace)
	var out *corev1.Service
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		svc, err := c.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		svc.Status.LoadBalancer.Ingress = nil
		for _, ip := range ips {
			svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String()})
		}
		out, err = c.UpdateStatus(ctx, svc, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("setting Service %s load-balancer ingress %v: %w", name, ips, err)
	}
	return out, nil
}

// EndpointSlices lists the EndpointSlices of Service name (label kubernetes.io/service-name).
func (l *Lab) EndpointSlices(ctx context.Context, service string) ([]discoveryv1.EndpointSlice, error) {
	list, err := l.Client.DiscoveryV1().EndpointSlices(PodNamespace).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return nil, fmt.Errorf("listing EndpointSlices of Service %s: %w", service, err)
	}
	return list.Items, nil
}

// WaitEndpointSlices polls the EndpointSlices of Service name until cond accepts them (returns
// nil) and returns them. On timeout the error carries cond's last complaint.
func (l *Lab) WaitEndpointSlices(ctx context.Context, service string, timeout time.Duration, cond func([]discoveryv1.EndpointSlice) error) ([]discoveryv1.EndpointSlice, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		slices, err := l.EndpointSlices(ctx, service)
		if err == nil {
			if last = cond(slices); last == nil {
				return slices, nil
			}
		} else {
			last = err
		}
		if p := l.API.ControllerManager; p != nil {
			if done, err := p.Exited(); done {
				return nil, fmt.Errorf("EndpointSlices of Service %s: kube-controller-manager exited (%v): %w; log tail:\n%s", service, err, last, p.LogTail(40))
			}
		}
		select {
		case <-ctx.Done():
			hint := ""
			if l.API.ControllerManager == nil {
				hint = " (no kube-controller-manager: call StartControllerManager)"
			}
			return nil, fmt.Errorf("EndpointSlices of Service %s after %v%s: %w", service, timeout, hint, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitReadyEndpoints waits until the EndpointSlices of Service name list exactly n ready
// endpoints, and returns all their endpoints, ready or not.
func (l *Lab) WaitReadyEndpoints(ctx context.Context, service string, n int, timeout time.Duration) ([]discoveryv1.Endpoint, error) {
	slices, err := l.WaitEndpointSlices(ctx, service, timeout, func(slices []discoveryv1.EndpointSlice) error {
		eps := SliceEndpoints(slices)
		ready := 0
		for _, ep := range eps {
			if EndpointReady(ep) {
				ready++
			}
		}
		if ready != n {
			return fmt.Errorf("%d ready endpoints, want %d: %s", ready, n, FormatEndpoints(eps))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return SliceEndpoints(slices), nil
}

// SliceEndpoints is every endpoint of slices.
func SliceEndpoints(slices []discoveryv1.EndpointSlice) []discoveryv1.Endpoint {
	var eps []discoveryv1.Endpoint
	for _, s := range slices {
		eps = append(eps, s.Endpoints...)
	}
	return eps
}

// EndpointReady is an endpoint's ready condition; unknown counts as ready, as the API says
// consumers should take it.
func EndpointReady(ep discoveryv1.Endpoint) bool {
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

// FormatEndpoints prints endpoints for failure messages: addresses, pod, node and conditions.
func FormatEndpoints(eps []discoveryv1.Endpoint) string {
	b := func(p *bool) string {
		if p == nil {
			return "?"
		}
		return fmt.Sprint(*p)
	}
	var out []string
	for _, ep := range eps {
		pod, node := "", ""
		if ep.TargetRef != nil {
			pod = ep.TargetRef.Name
		}
		if ep.NodeName != nil {
			node = *ep.NodeName
		}
		out = append(out, fmt.Sprintf("%v(pod %s on %s ready=%s serving=%s terminating=%s)", ep.Addresses, pod, node,
			b(ep.Conditions.Ready), b(ep.Conditions.Serving), b(ep.Conditions.Terminating)))
	}
	return "[" + strings.Join(out, " ") + "]"
}

// ServeHostname answers on port, TCP and UDP, on every address of the pod, as agnhost's
// serve-hostname does: each TCP line and each UDP datagram gets "<pod name> <client address as
// the pod sees it>\n". Close stops both.
func (p *Pod) ServeHostname(port uint16) (*Server, error) {
	return ServeHostnameAt(p.Netns, p.Name, netip.AddrPortFrom(netip.IPv4Unspecified(), port))
}

// ServeHostnameAt is ServeHostname for any server in ns answering as name on addr, e.g. a
// host-network backend in a node's netns bound to the node's address (UDP servers there bind to
// the address they serve, as agnhost's --udp-listen-addresses does, so that answers leave from it).
func ServeHostnameAt(ns Netns, name string, addr netip.AddrPort) (*Server, error) {
	answer := func(from net.Addr) string { return fmt.Sprintf("%s %s\n", name, from) }
	tcp, err := serveTCP(ns, addr, 30*time.Second, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			if _, err := fmt.Fprint(c, answer(c.RemoteAddr())); err != nil {
				return
			}
		}
	})
	if err != nil {
		return nil, err
	}
	pc, err := openIn(ns, func() (net.PacketConn, error) { return net.ListenPacket("udp4", addr.String()) })
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("udp listen %s in %s: %w", addr, ns, err)
	}
	s := &Server{Addr: tcp.Addr, closeFn: func() error { return errors.Join(pc.Close(), tcp.Close()) }}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(answer(from)), from)
		}
	}()
	return s, nil
}

// AskHostname sends one request from ns to a ServeHostname server at dst over proto (TCP or UDP),
// on a connection or socket of its own (a new flow for a load balancer), and returns the name of
// the pod that answered and the client address it saw.
func AskHostname(ns Netns, proto corev1.Protocol, dst netip.AddrPort, timeout time.Duration) (string, netip.AddrPort, error) {
	network := "tcp4"
	if proto == corev1.ProtocolUDP {
		network = "udp4"
	} else if proto != corev1.ProtocolTCP && proto != "" {
		return "", netip.AddrPort{}, fmt.Errorf("AskHostname speaks TCP and UDP, not %s", proto)
	}
	c, err := openIn(ns, func() (net.Conn, error) { return dialNewFlow(network, dst, timeout) })
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("%s connect %s from %s: %w", network, dst, ns, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprint(c, "hostname?\n"); err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("%s send to %s from %s: %w", network, dst, ns, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("%s hostname from %s to %s: %w", network, ns, dst, err)
	}
	name, seen, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		return "", netip.AddrPort{}, fmt.Errorf("%s hostname from %s to %s: answer %q", network, ns, dst, line)
	}
	client, err := netip.ParseAddrPort(seen)
	if err != nil {
		return "", netip.AddrPort{}, fmt.Errorf("%s hostname from %s to %s: answer %q: %w", network, ns, dst, line, err)
	}
	return name, client, nil
}

// udpSourcePort hands out UDP source ports for new flows in turn, below the kernel's ephemeral
// range (32768-60999) and the NodePort range (30000-32767).
var udpSourcePort atomic.Uint32

const udpSourcePortMin, udpSourcePorts = 20000, 10000

// dialNewFlow dials dst over network as a flow no load balancer has seen: for UDP the source
// port comes from udpSourcePort in turn, because the kernel picks ephemeral ports at random and
// may pick one whose earlier flow a load balancer still tracks (a UDP conntrack entry outlives its
// socket), which would go where that flow went, not where the balancer or the client's affinity
// would send a new one.
func dialNewFlow(network string, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	if network != "udp4" {
		return (&net.Dialer{Timeout: timeout}).Dial(network, dst.String())
	}
	var err error
	for range 16 { // ports another socket holds are skipped
		port := udpSourcePortMin + int(udpSourcePort.Add(1)%udpSourcePorts)
		var c net.Conn
		c, err = (&net.Dialer{Timeout: timeout, LocalAddr: &net.UDPAddr{Port: port}}).Dial(network, dst.String())
		if err == nil {
			return c, nil
		}
	}
	return nil, err
}

// CountHostnames asks n times (AskHostname, a new flow each time) and counts the answers by pod
// name. It stops at the first request that fails, returning the counts so far with the error.
func CountHostnames(ns Netns, proto corev1.Protocol, dst netip.AddrPort, n int, timeout time.Duration) (map[string]int, error) {
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		name, _, err := AskHostname(ns, proto, dst, timeout)
		if err != nil {
			return counts, fmt.Errorf("request %d of %d (answers so far %s): %w", i+1, n, FormatCounts(counts), err)
		}
		counts[name]++
	}
	return counts, nil
}

// FormatCounts prints hostname counts in name order.
func FormatCounts(counts map[string]int) string {
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []string
	for _, name := range names {
		out = append(out, fmt.Sprintf("%s=%d", name, counts[name]))
	}
	return "{" + strings.Join(out, " ") + "}"
}
