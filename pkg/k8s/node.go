package k8s

import (
	"fmt"
	"iter"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// Node is a Node as the agent's cache holds it (TrimForCache), and as its readers take it (the
// node and route reconcilers, the domain model's questions, pod CIDR allocation, BGP speaker
// selection, the health check's eligibility): name, UID, resourceVersion, whether it is being
// deleted, every label (pool, zone and the BGP selectors may name any), Flannel's and edgeplane's
// annotations, spec.podCIDR(s), taints and status.addresses. Conditions, nodeInfo, capacity,
// images, volumes and daemon endpoints (most of a Node's bytes, and what kubelet's status updates
// change) stay in the API server.
//
// It is 192 bytes where a corev1.Node's struct alone is 784 (896 as allocated), keeps its
// annotations as sorted pairs (KeyValues) rather than a map, and shares its labels with the
// nodes of its pool (NodeLabels): 768 bytes of heap a Node decoded from the API server with
// kubelet's, kubeadm's and a pool's labels instead of 2,305 as a trimmed corev1.Node, 7.7 MB
// less at 5,000 Nodes (BenchmarkDecodedNodeCache; 1,081 with a slice of labels per Node). The
// fields keep the paths of the API's Node (node.Spec.PodCIDR, node.Status.Addresses) so that code
// reads the same. Whatever a reader starts to read of a Node must be kept here and in
// compactNode.
type Node struct {
	Name, ResourceVersion string
	UID                   types.UID
	Deleting              bool       // metadata.deletionTimestamp is set
	Labels                NodeLabels // every label
	Annotations           KeyValues  // Flannel's and edgeplane's (nodeAnnotationPrefixes)
	Spec                  NodeSpec
	Status                NodeStatus
}

// KeyValues are a cached Node's annotations, or the pairs of its labels (NodeLabels), sorted by
// key: as pairs in a slice they take about half the heap of a map of as many (352 bytes against
// ~650 for 11), and the few lookups a reconcile makes are binary searches. It is a
// labels.Labels, which selectors match.
type KeyValues []KeyValue

// KeyValue is a label or an annotation.
type KeyValue struct{ Key, Value string }

var _ labels.Labels = KeyValues(nil)

// KeyValuesOf is m's pairs, sorted; nil when m is empty.
func KeyValuesOf(m map[string]string) KeyValues {
	if len(m) == 0 {
		return nil
	}
	kv := make(KeyValues, 0, len(m))
	for k, v := range m {
		kv = append(kv, KeyValue{k, v})
	}
	slices.SortFunc(kv, byKey)
	return kv
}

func byKey(a, b KeyValue) int { return strings.Compare(a.Key, b.Key) }

// Lookup is the value of key, and whether there is one.
func (kv KeyValues) Lookup(key string) (string, bool) {
	i, ok := slices.BinarySearchFunc(kv, key, func(e KeyValue, key string) int { return strings.Compare(e.Key, key) })
	if !ok {
		return "", false
	}
	return kv[i].Value, true
}

// Get is the value of key; "" when there is none.
func (kv KeyValues) Get(key string) string {
	v, _ := kv.Lookup(key)
	return v
}

// Has reports whether there is a value for key.
func (kv KeyValues) Has(key string) bool {
	_, ok := kv.Lookup(key)
	return ok
}

// Map is the pairs as a map (a new one); nil when there are none.
func (kv KeyValues) Map() map[string]string {
	if len(kv) == 0 {
		return nil
	}
	m := make(map[string]string, len(kv))
	for _, e := range kv {
		m[e.Key] = e.Value
	}
	return m
}

// NodeSpec is what Node keeps of a Node's spec.
type NodeSpec struct {
	PodCIDR  string
	PodCIDRs []string
	Taints   []api.Taint
}

// NodeStatus is what Node keeps of a Node's status.
type NodeStatus struct {
	Addresses []api.NodeAddress
}

var _ runtime.Object = (*Node)(nil)

func (*Node) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (n *Node) DeepCopyObject() runtime.Object { return n.DeepCopy() }

// DeepCopy is a copy of n that shares nothing mutable with it.
func (n *Node) DeepCopy() *Node {
	c := *n
	c.Annotations = slices.Clone(n.Annotations) // Labels are immutable, shared
	c.Spec.PodCIDRs = slices.Clone(n.Spec.PodCIDRs)
	if n.Spec.Taints != nil {
		c.Spec.Taints = make([]api.Taint, len(n.Spec.Taints))
		for i := range n.Spec.Taints {
			n.Spec.Taints[i].DeepCopyInto(&c.Spec.Taints[i])
		}
	}
	c.Status.Addresses = slices.Clone(n.Status.Addresses)
	return &c
}

// GetObjectMeta makes the Node a metav1.ObjectMetaAccessor, which is what client-go's store and
// informer read for its key and resourceVersion (cache.MetaNamespaceKeyFunc), a few times an
// event. It leaves out the labels and annotations, which would be two maps made at each call
// (5,000 Nodes listed: tens of MB of garbage): read them from the Node (NodeLister.List matches
// a selector against Labels).
func (n *Node) GetObjectMeta() metav1.Object {
	m := &metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}
	if n.Deleting {
		m.DeletionTimestamp = &metav1.Time{}
	}
	return m
}

// Ref is a reference to the Node, for an event about it, with its resourceVersion.
func (n *Node) Ref() *api.ObjectReference {
	return &api.ObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}
}

// NodesOf is the Nodes the cache would keep of list's items (a list in JSON, decoded whole). The
// list is not changed; the Nodes may share its taints and pod CIDRs.
func NodesOf(list *api.NodeList) []*Node {
	nodes := make([]*Node, len(list.Items))
	for i := range list.Items {
		nodes[i] = compactNode(&list.Items[i])
	}
	return nodes
}

// ourAnnotation reports whether the agent reads the Node annotation key (nodeAnnotationPrefixes).
func ourAnnotation(key string) bool {
	for _, prefix := range nodeAnnotationPrefixes {
		if strings.HasPrefix(key, prefix) {
			return true
		}
	}
	return false
}

// nodeAnnotationPrefixes are the Node annotations the agent reads: Flannel's (VTEPs, public
// addresses) and its own (pod CIDR it allocated, routes advertised). kubelet's, kubeadm's, CSI's
// and the cloud controllers' annotations stay in the API server.
var nodeAnnotationPrefixes = []string{flannelPrefix, "edgeplane.io/"}

// compactNode is o as the cache keeps it. The strings every Node repeats are kept once
// (interned): label keys and values (a pool's, zone's, OS's are the same on many nodes; the
// hostname label is the node's name) and annotation keys; a pod CIDR listed twice (spec.podCIDR
// and podCIDRs) and a hostname address equal to the name share one copy.
func compactNode(o *api.Node) *Node {
	n := &Node{Name: o.Name, ResourceVersion: o.ResourceVersion, UID: o.UID, Deleting: o.DeletionTimestamp != nil}
	var annotations int
	for k := range o.Annotations {
		if ourAnnotation(k) {
			annotations++
		}
	}
	if annotations > 0 {
		n.Annotations = make(KeyValues, 0, annotations)
		for k, v := range o.Annotations {
			if ourAnnotation(k) {
				n.Annotations = append(n.Annotations, KeyValue{interned(k), v})
			}
		}
		slices.SortFunc(n.Annotations, byKey)
	}
	n.Labels = NodeLabelsOf(n.Name, o.Labels)
	n.Spec = NodeSpec{PodCIDR: o.Spec.PodCIDR, PodCIDRs: o.Spec.PodCIDRs, Taints: o.Spec.Taints}
	if len(o.Spec.PodCIDRs) > 0 && o.Spec.PodCIDRs[0] == o.Spec.PodCIDR {
		n.Spec.PodCIDRs = slices.Clone(o.Spec.PodCIDRs)
		n.Spec.PodCIDRs[0] = o.Spec.PodCIDR
	}
	if len(o.Status.Addresses) > 0 {
		n.Status.Addresses = make([]api.NodeAddress, len(o.Status.Addresses))
		for i, a := range o.Status.Addresses {
			if a.Address == o.Name {
				a.Address = o.Name
			}
			a.Type = api.NodeAddressType(interned(string(a.Type)))
			n.Status.Addresses[i] = a
		}
	}
	return n
}

// NodeLister reads the Node informer's cache (Informers.Nodes), which holds Nodes.
type NodeLister struct{ indexer cache.Indexer }

// NewNodeLister reads indexer, the Node informer's.
func NewNodeLister(indexer cache.Indexer) *NodeLister { return &NodeLister{indexer} }

// Get is the Node called name; a NotFound error when the cache has none. An object of another
// type (an informer made without TrimForCache) is an error, not a missing Node: a reconciler
// must not take it for a deleted one.
func (l *NodeLister) Get(name string) (*Node, error) {
	obj, ok, err := l.indexer.GetByKey(name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(api.Resource("node"), name)
	}
	n, isNode := obj.(*Node)
	if !isNode {
		return nil, fmt.Errorf("node %s: the cache holds a %T, not a *k8s.Node (an informer without TrimForCache)", name, obj)
	}
	return n, nil
}

// List is every Node of the cache that selector matches, in no order. Objects of another type
// are left out and make the error.
func (l *NodeLister) List(selector labels.Selector) ([]*Node, error) {
	objs := l.indexer.List()
	nodes := make([]*Node, 0, len(objs))
	var err error
	for _, obj := range objs {
		n, ok := obj.(*Node)
		if !ok {
			err = fmt.Errorf("the Node cache holds a %T, not a *k8s.Node (an informer without TrimForCache)", obj)
			continue
		}
		if selector.Empty() || selector.Matches(n.Labels) {
			nodes = append(nodes, n)
		}
	}
	return nodes, err
}

// LabelsOfNodes is every node's name and labels, for service.NewCluster.
func LabelsOfNodes(nodes []*Node) iter.Seq2[string, labels.Labels] {
	return func(yield func(string, labels.Labels) bool) {
		for _, n := range nodes {
			if !yield(n.Name, n.Labels) {
				return
			}
		}
	}
}
