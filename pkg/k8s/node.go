package k8s

import (
	"iter"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// Node is a Node as the agent's cache holds it (TrimForCache), and as its readers take it (the
// node and route reconcilers, the domain model's questions, pod CIDR allocation, BGP speaker
// selection, the health check's eligibility): name, UID, resourceVersion, whether it is being
// deleted, every label (pool, zone and the BGP selectors may name any), Flannel's and edgeplane's
// annotations, spec.podCIDR(s), taints and status.addresses. Conditions, nodeInfo, capacity,
// images, volumes and daemon endpoints (most of a Node's bytes, and what kubelet's status updates
// change) stay in the API server.
//
// It is 160 bytes where a corev1.Node's struct alone is 784 (896 as allocated), before its maps
// and strings: ~3.7 MB less at 5,000 Nodes (BenchmarkDecodedNodeCache). The fields keep the
// paths of corev1.Node (node.Spec.PodCIDR, node.Status.Addresses) so that code reads the same.
// Whatever a reader starts to read of a Node must be kept here and in compactNode.
type Node struct {
	Name, ResourceVersion string
	UID                   types.UID
	Deleting              bool              // metadata.deletionTimestamp is set
	Labels                map[string]string // every label
	Annotations           map[string]string // Flannel's and edgeplane's (nodeAnnotationPrefixes)
	Spec                  NodeSpec
	Status                NodeStatus
}

// NodeSpec is what Node keeps of a Node's spec.
type NodeSpec struct {
	PodCIDR  string
	PodCIDRs []string
	Taints   []corev1.Taint
}

// NodeStatus is what Node keeps of a Node's status.
type NodeStatus struct {
	Addresses []corev1.NodeAddress
}

var _ runtime.Object = (*Node)(nil)

func (*Node) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (n *Node) DeepCopyObject() runtime.Object { return n.DeepCopy() }

// DeepCopy is a copy of n that shares nothing mutable with it.
func (n *Node) DeepCopy() *Node {
	c := *n
	c.Labels, c.Annotations = maps.Clone(n.Labels), maps.Clone(n.Annotations)
	c.Spec.PodCIDRs = slices.Clone(n.Spec.PodCIDRs)
	if n.Spec.Taints != nil {
		c.Spec.Taints = make([]corev1.Taint, len(n.Spec.Taints))
		for i := range n.Spec.Taints {
			n.Spec.Taints[i].DeepCopyInto(&c.Spec.Taints[i])
		}
	}
	c.Status.Addresses = slices.Clone(n.Status.Addresses)
	return &c
}

// GetObjectMeta makes the Node a metav1.ObjectMetaAccessor, which is what client-go's store reads
// for its keys and cache.MetaNamespaceKeyFunc takes.
func (n *Node) GetObjectMeta() metav1.Object {
	m := &metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
		Labels: n.Labels, Annotations: n.Annotations}
	if n.Deleting {
		m.DeletionTimestamp = &metav1.Time{}
	}
	return m
}

// Ref is a reference to the Node, for an event about it (an event recorder cannot reference
// this type by itself: it is not in the API's scheme).
func (n *Node) Ref() *corev1.ObjectReference {
	return &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}
}

// NodeOf is the Node the cache would keep of o, for code that read o from the API server. o is
// not changed; the result shares its slices.
func NodeOf(o *corev1.Node) *Node { return compactNode(o) }

// nodeAnnotationPrefixes are the Node annotations the agent reads: Flannel's (VTEPs, public
// addresses) and its own (pod CIDR it allocated, routes advertised). kubelet's, kubeadm's, CSI's
// and the cloud controllers' annotations stay in the API server.
var nodeAnnotationPrefixes = []string{flannelPrefix, "edgeplane.io/"}

// compactNode is o as the cache keeps it. The strings every Node repeats are kept once
// (interned): label keys and values (a pool's, zone's, OS's are the same on many nodes; the
// hostname label is the node's name) and annotation keys; a pod CIDR listed twice (spec.podCIDR
// and podCIDRs) and a hostname address equal to the name share one copy.
func compactNode(o *corev1.Node) *Node {
	n := &Node{Name: o.Name, ResourceVersion: o.ResourceVersion, UID: o.UID, Deleting: o.DeletionTimestamp != nil}
	for k, v := range o.Annotations {
		for _, prefix := range nodeAnnotationPrefixes {
			if strings.HasPrefix(k, prefix) {
				if n.Annotations == nil {
					n.Annotations = map[string]string{}
				}
				n.Annotations[interned(k)] = v
				break
			}
		}
	}
	if len(o.Labels) > 0 {
		n.Labels = make(map[string]string, len(o.Labels))
		for k, v := range o.Labels {
			if v == o.Name {
				v = o.Name
			} else {
				v = interned(v)
			}
			n.Labels[interned(k)] = v
		}
	}
	n.Spec = NodeSpec{PodCIDR: o.Spec.PodCIDR, PodCIDRs: o.Spec.PodCIDRs, Taints: o.Spec.Taints}
	if len(o.Spec.PodCIDRs) > 0 && o.Spec.PodCIDRs[0] == o.Spec.PodCIDR {
		n.Spec.PodCIDRs = slices.Clone(o.Spec.PodCIDRs)
		n.Spec.PodCIDRs[0] = o.Spec.PodCIDR
	}
	if len(o.Status.Addresses) > 0 {
		n.Status.Addresses = make([]corev1.NodeAddress, len(o.Status.Addresses))
		for i, a := range o.Status.Addresses {
			if a.Address == o.Name {
				a.Address = o.Name
			}
			a.Type = corev1.NodeAddressType(interned(string(a.Type)))
			n.Status.Addresses[i] = a
		}
	}
	return n
}

// NodeLister reads the Node informer's cache (Informers.Nodes), which holds Nodes.
type NodeLister struct{ indexer cache.Indexer }

// NewNodeLister reads indexer, the Node informer's.
func NewNodeLister(indexer cache.Indexer) *NodeLister { return &NodeLister{indexer} }

// Get is the Node called name; a NotFound error when the cache has none.
func (l *NodeLister) Get(name string) (*Node, error) {
	obj, ok, err := l.indexer.GetByKey(name)
	if err != nil {
		return nil, err
	}
	n, isNode := obj.(*Node)
	if !ok || !isNode {
		return nil, apierrors.NewNotFound(corev1.Resource("node"), name)
	}
	return n, nil
}

// List is every Node of the cache that selector matches, in no order; as client-go's listers, it
// does not fail.
func (l *NodeLister) List(selector labels.Selector) ([]*Node, error) {
	var nodes []*Node
	err := cache.ListAll(l.indexer, selector, func(obj any) {
		if n, ok := obj.(*Node); ok {
			nodes = append(nodes, n)
		}
	})
	return nodes, err
}

// NodeLabels is every node's name and labels, for service.NewCluster.
func NodeLabels(nodes []*Node) iter.Seq2[string, map[string]string] {
	return func(yield func(string, map[string]string) bool) {
		for _, n := range nodes {
			if !yield(n.Name, n.Labels) {
				return
			}
		}
	}
}
