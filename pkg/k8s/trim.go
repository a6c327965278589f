package k8s

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// lastApplied is kubectl apply's copy of the whole object: as large as the object, read by nobody
// here.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// TrimForCache is the informers' transform: it drops, before an object enters a cache, what no
// reconciler of the agent reads, so that 10,000 Services and their EndpointSlices cost the agent
// what it uses rather than what the API server stores. Services and EndpointSlices are cached as
// the compact Service and EndpointSlice of this package, Nodes as trimNode leaves them; from every
// other object managedFields (server-side apply bookkeeping, often larger than the spec) and
// kubectl's last-applied annotation go. Objects are trimmed in
// place: the informer owns them until they enter its store. It may see an object twice
// (client-go's watch-list transforms what it streams, then again what it hands to the
// informer): trimming is idempotent.
func TrimForCache(obj any) (any, error) {
	switch o := obj.(type) {
	case *EndpointSlice, *Service:
		return o, nil
	case *discoveryv1.EndpointSlice:
		return compactSlice(o), nil
	case *corev1.Service:
		return compactService(o), nil
	case *corev1.Node:
		return trimNode(o), nil
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[lastApplied] != "" {
			delete(a, lastApplied)
		}
	}
	return obj, nil
}

// nodeAnnotationPrefixes are the Node annotations the agent reads: Flannel's (VTEPs, public
// addresses) and its own (pod CIDR it allocated, routes advertised). kubelet's, kubeadm's, CSI's
// and the cloud controllers' annotations stay in the API server.
var nodeAnnotationPrefixes = []string{flannelPrefix, "edgeplane.io/"}

// trimNode keeps of a Node what the agent reads (the node and route reconcilers, the domain model,
// pod CIDR allocation, BGP speaker selection, the health check's eligibility): name, UID,
// resourceVersion, deletion stamp, every label (pool, zone and the BGP selectors may name any),
// Flannel's and edgeplane's annotations, spec.podCIDR(s), taints and status.addresses. Conditions,
// nodeInfo, capacity, images, volumes and daemon endpoints (most of a Node's bytes, and what
// kubelet's status updates change) are dropped. It is idempotent.
//
// The strings every Node repeats are kept once (interned): label keys and values (a pool's,
// zone's, OS's are the same on many nodes; the hostname label is the node's name) and annotation
// keys; a pod CIDR listed twice (spec.podCIDR and podCIDRs) and a hostname address equal to the
// name share one copy: ~600 bytes less a Node decoded from the API server with kubelet's,
// kubeadm's and a pool's labels, ~3 MB at 5,000 Nodes (BenchmarkDecodedNodeCache).
func trimNode(n *corev1.Node) *corev1.Node {
	var annotations map[string]string
	for k, v := range n.Annotations {
		for _, prefix := range nodeAnnotationPrefixes {
			if strings.HasPrefix(k, prefix) {
				if annotations == nil {
					annotations = map[string]string{}
				}
				annotations[interned(k)] = v
				break
			}
		}
	}
	labels := n.Labels
	if len(labels) > 0 {
		labels = make(map[string]string, len(n.Labels))
		for k, v := range n.Labels {
			if v == n.Name {
				v = n.Name
			} else {
				v = interned(v)
			}
			labels[interned(k)] = v
		}
	}
	n.ObjectMeta = metav1.ObjectMeta{
		Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, DeletionTimestamp: n.DeletionTimestamp,
		Labels: labels, Annotations: annotations,
	}
	podCIDRs := n.Spec.PodCIDRs
	if len(podCIDRs) > 0 && podCIDRs[0] == n.Spec.PodCIDR {
		podCIDRs[0] = n.Spec.PodCIDR
	}
	for i, a := range n.Status.Addresses {
		if a.Address == n.Name {
			n.Status.Addresses[i].Address = n.Name
		}
		n.Status.Addresses[i].Type = corev1.NodeAddressType(interned(string(a.Type)))
	}
	n.Spec = corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: podCIDRs, Taints: n.Spec.Taints}
	n.Status = corev1.NodeStatus{Addresses: n.Status.Addresses}
	return n
}

// keep is m with only the given keys; nil when it has none of them.
func keep(m map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = make(map[string]string, len(keys))
			}
			out[k] = v
		}
	}
	return out
}
