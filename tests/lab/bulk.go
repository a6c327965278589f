package lab

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Bulk Services load a Services dataplane the way a large cluster does: many Services, each with
// an EndpointSlice of several ready endpoints. They have no selector: the harness writes their
// slices itself (as an EndpointSlice mirroring controller would), so thousands of them appear in
// seconds instead of at the controller manager's pace. Their endpoints are addresses in
// BulkEndpointNet, which nothing in the lab owns: the Services are programmed, never dialled.

// BulkEndpointNet holds the bulk Services' endpoint addresses: outside the cluster, service and
// underlay networks, owned by nobody in the lab.
var BulkEndpointNet = netip.MustParsePrefix("100.64.0.0/10")

// BulkLabel marks bulk Services and their slices, so they can be listed and deleted together.
const BulkLabel = "bench.edgeplane.io/bulk"

// BulkServices creates Services from..to-1 named <prefix>-<i> (ClusterIP, TCP port 80 -> 8080),
// each with one EndpointSlice of `endpoints` ready endpoints, using `workers` parallel writers.
// Services that already exist are kept (so a run can grow 1k -> 10k). It returns how many were
// created.
func (l *Lab) BulkServices(ctx context.Context, prefix string, from, to, endpoints, workers int) (int, error) {
	if err := l.checkOpen(); err != nil {
		return 0, err
	}
	if endpoints < 1 || endpoints > 16 {
		return 0, fmt.Errorf("bulk services: %d endpoints per service, want 1..16", endpoints)
	}
	cs, err := l.bulkClient()
	if err != nil {
		return 0, err
	}
	return bulkCreate(ctx, from, to, workers, func(ctx context.Context, i int) (bool, error) {
		return createBulkService(ctx, cs, fmt.Sprintf("%s-%d", prefix, i), i, endpoints)
	})
}

// bulkCreate runs create(i) for i in [from, to) on workers goroutines and returns how many
// reported a new object; the first error stops the others and is returned.
func bulkCreate(ctx context.Context, from, to, workers int, create func(ctx context.Context, i int) (bool, error)) (int, error) {
	var (
		next    atomic.Int64
		created atomic.Int64
		wg      sync.WaitGroup
		errMu   sync.Mutex
		first   error
	)
	next.Store(int64(from))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				ok, err := create(ctx, i)
				if err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
					cancel()
					return
				}
				if ok {
					created.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(created.Load()), first
}

// bulkClient is an admin client without client-side rate limits (the API server's own limits
// still apply).
func (l *Lab) bulkClient() (kubernetes.Interface, error) {
	cfg := l.API.RESTConfig()
	cfg.QPS, cfg.Burst = -1, 0
	return kubernetes.NewForConfig(cfg)
}

func createBulkService(ctx context.Context, cs kubernetes.Interface, name string, i, endpoints int) (bool, error) {
	labels := map[string]string{BulkLabel: "true"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: PodNamespace, Labels: labels},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, Protocol: corev1.ProtocolTCP,
		}}},
	}
	created := true
	if _, err := cs.CoreV1().Services(PodNamespace).Create(ctx, svc, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		created = false
	} else if err != nil {
		return false, fmt.Errorf("creating service %s: %w", name, err)
	}
	sliceLabels := map[string]string{BulkLabel: "true", discoveryv1.LabelServiceName: name,
		discoveryv1.LabelManagedBy: "bench.edgeplane.io"}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-bulk", Namespace: PodNamespace, Labels: sliceLabels},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for e := range endpoints {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{BulkEndpoint(i, e).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(PodNamespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return false, fmt.Errorf("creating endpointslice of %s: %w", name, err)
	}
	return created, nil
}

// BulkEndpoint is endpoint e (< 16) of bulk Service i: a block of 16 addresses per Service in
// BulkEndpointNet, so Services share none (262,144 Services, then the blocks wrap).
func BulkEndpoint(i, e int) netip.Addr {
	base := BulkEndpointNet.Addr().As4()
	n := binary.BigEndian.Uint32(base[:]) + uint32(i%(1<<18))<<4 + uint32(e%16)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// DeleteBulkServices deletes every bulk Service and slice (DeleteCollection by label).
func (l *Lab) DeleteBulkServices(ctx context.Context) error {
	cs, err := l.bulkClient()
	if err != nil {
		return err
	}
	sel := metav1.ListOptions{LabelSelector: BulkLabel + "=true"}
	if err := cs.DiscoveryV1().EndpointSlices(PodNamespace).DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		return fmt.Errorf("deleting bulk endpointslices: %w", err)
	}
	// Services have no DeleteCollection in the API: one by one, in parallel.
	list, err := cs.CoreV1().Services(PodNamespace).List(ctx, sel)
	if err != nil {
		return fmt.Errorf("listing bulk services: %w", err)
	}
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
		work  = make(chan string)
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				if err := cs.CoreV1().Services(PodNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					errMu.Lock()
					first = cmp.Or(first, fmt.Errorf("deleting service %s: %w", name, err))
					errMu.Unlock()
				}
			}
		}()
	}
	for _, s := range list.Items {
		work <- s.Name
	}
	close(work)
	wg.Wait()
	return first
}

// SetEndpoints writes the EndpointSlice of a selector-less Service: pods as its ready endpoints
// (with their nodes, for the Local traffic policies), one slice port per Service port, at the
// port's numeric targetPort. It replaces the slice an earlier call wrote.
func (l *Lab) SetEndpoints(ctx context.Context, svc *corev1.Service, pods ...*Pod) error {
	var eps []discoveryv1.Endpoint
	for _, p := range pods {
		eps = append(eps, discoveryv1.Endpoint{
			Addresses:  []string{p.IP.String()},
			NodeName:   ptr.To(p.Node.Name),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: PodNamespace, Name: p.Name, UID: p.UID},
		})
	}
	return l.writeEndpointSlice(ctx, svc, eps)
}

// HostEndpoint is a host-network backend: a server in a node's netns (ServeHostnameAt) on one of
// the node's addresses, as a hostNetwork pod's endpoint is the node's IP.
type HostEndpoint struct {
	Addr netip.Addr
	Node *Node
}

// SetHostEndpoints is SetEndpoints for host-network backends: each address ready, on its node.
func (l *Lab) SetHostEndpoints(ctx context.Context, svc *corev1.Service, hosts ...HostEndpoint) error {
	var eps []discoveryv1.Endpoint
	for _, h := range hosts {
		eps = append(eps, discoveryv1.Endpoint{
			Addresses:  []string{h.Addr.String()},
			NodeName:   ptr.To(h.Node.Name),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return l.writeEndpointSlice(ctx, svc, eps)
}

func (l *Lab) writeEndpointSlice(ctx context.Context, svc *corev1.Service, eps []discoveryv1.Endpoint) error {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-lab", Namespace: svc.Namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "lab.edgeplane.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.IntValue() == 0 {
			return fmt.Errorf("service %s port %s: SetEndpoints needs a numeric targetPort", svc.Name, p.Name)
		}
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(int32(p.TargetPort.IntValue())), Protocol: ptr.To(p.Protocol)})
	}
	c := l.Client.DiscoveryV1().EndpointSlices(svc.Namespace)
	if err := c.Delete(ctx, slice.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("replacing endpointslice of %s: %w", svc.Name, err)
	}
	if _, err := c.Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating endpointslice of %s: %w", svc.Name, err)
	}
	return nil
}

// ServiceFrontends counts the frontends in n's lb_svc_map (every scope), as the datapath sees them.
func (n *Node) ServiceFrontends() (int, error) {
	count := 0
	err := n.iterate("lb_svc_map", func(_, _ []byte) { count++ })
	return count, err
}
