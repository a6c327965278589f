// Package k8stest gives tests the agent's k8s.API on a client-go clientset (the fake one, mostly),
// so that they seed objects and check requests as before. Only tests import it: it links the
// clientset and k8s.io/api, which the agent does not (pkg/k8s, pkg/k8s/api). Objects cross as
// the agent's client has them cross: Nodes, Services and EndpointSlices as protobuf decoded into
// the compact types, the other kinds as JSON decoded into package api's.
package k8stest

import (
	"context"
	"encoding/json"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// FromClientset is the k8s.API of cs.
func FromClientset(cs kubernetes.Interface) k8s.API { return clientset{cs} }

type clientset struct{ cs kubernetes.Interface }

func (a clientset) GetNode(ctx context.Context, name string) (*k8s.Node, error) {
	node, err := a.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return Node(node), nil
}

func (a clientset) ListNodes(ctx context.Context) ([]*k8s.Node, error) {
	list, err := a.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	nodes := make([]*k8s.Node, len(list.Items))
	for i := range list.Items {
		nodes[i] = Node(&list.Items[i])
	}
	return nodes, nil
}

func (a clientset) PatchNode(ctx context.Context, name string, patch []byte) (*k8s.Node, error) {
	node, err := a.cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return nil, err
	}
	return Node(node), nil
}

func (a clientset) ListLeases(ctx context.Context, namespace, labelSelector string) (*coordinationv1.LeaseList, error) {
	return a.cs.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: labelSelector})
}

func (a clientset) GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	return a.cs.CoordinationV1().Leases(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (a clientset) CreateLease(ctx context.Context, namespace string, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return a.cs.CoordinationV1().Leases(namespace).Create(ctx, lease, metav1.CreateOptions{})
}

func (a clientset) UpdateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return a.cs.CoordinationV1().Leases(lease.Namespace).Update(ctx, lease, metav1.UpdateOptions{})
}

func (a clientset) DeleteLease(ctx context.Context, namespace, name string, pre metav1.Preconditions) error {
	return a.cs.CoordinationV1().Leases(namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &pre})
}

func (a clientset) GetSecret(ctx context.Context, namespace, name string) (*api.Secret, error) {
	return viaJSON[api.Secret](a.cs.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{}))
}

func (a clientset) CreateEvent(ctx context.Context, event *api.Event) (*api.Event, error) {
	e, err := viaJSON[corev1.Event](event, nil)
	if err != nil {
		return nil, err
	}
	return viaJSON[api.Event](a.cs.CoreV1().Events(event.Namespace).Create(ctx, e, metav1.CreateOptions{}))
}

func (a clientset) PatchEvent(ctx context.Context, event *api.Event, patch []byte) (*api.Event, error) {
	return viaJSON[api.Event](a.cs.CoreV1().Events(event.Namespace).Patch(ctx, event.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}))
}

func (a clientset) ListerWatcher(resource k8s.Resource, namespace string, fieldSelector fields.Selector) cache.ListerWatcher {
	var lw *cache.ListWatch
	switch resource {
	case k8s.Nodes:
		lw = listWatch(a.cs.CoreV1().Nodes().List, a.cs.CoreV1().Nodes().Watch, fieldSelector)
	case k8s.Pods:
		lw = listWatch(a.cs.CoreV1().Pods(namespace).List, a.cs.CoreV1().Pods(namespace).Watch, fieldSelector)
	case k8s.Services:
		lw = listWatch(a.cs.CoreV1().Services(namespace).List, a.cs.CoreV1().Services(namespace).Watch, fieldSelector)
	case k8s.EndpointSlices:
		slices := a.cs.DiscoveryV1().EndpointSlices(namespace)
		lw = listWatch(slices.List, slices.Watch, fieldSelector)
	case k8s.ConfigMaps:
		lw = listWatch(a.cs.CoreV1().ConfigMaps(namespace).List, a.cs.CoreV1().ConfigMaps(namespace).Watch, fieldSelector)
	default:
		panic(fmt.Sprintf("k8stest: no ListerWatcher of %q", resource))
	}
	// The fake clientset cannot stream an initial list: the informers then list and watch, as
	// client-go's informer factory arranges for it.
	return cache.ToListWatcherWithWatchListSemantics(lw, a.cs)
}

func listWatch[L runtime.Object](
	list func(context.Context, metav1.ListOptions) (L, error),
	watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error),
	fieldSelector fields.Selector,
) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = fieldSelector.String()
			l, err := list(ctx, opts)
			if err != nil {
				return nil, err
			}
			return agentList(l)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = fieldSelector.String()
			w, err := watchFunc(ctx, opts)
			if err != nil {
				return nil, err
			}
			return watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
				if o, err := Decoded(e.Object); err == nil {
					e.Object = o
				} else {
					e = watch.Event{Type: watch.Error, Object: &metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}}
				}
				return e, true
			}), nil
		},
	}
}

// agentList is a list of the clientset as the agent's client decodes it: its items as Decoded
// makes them.
func agentList(list runtime.Object) (runtime.Object, error) {
	objs, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	m, err := meta.ListAccessor(list)
	if err != nil {
		return nil, err
	}
	items := make([]runtime.Object, len(objs))
	for i, o := range objs {
		if items[i], err = Decoded(o); err != nil {
			return nil, err
		}
	}
	return &metainternalversion.List{ListMeta: metav1.ListMeta{ResourceVersion: m.GetResourceVersion(), Continue: m.GetContinue()},
		Items: items}, nil
}

// Transform is k8s.TrimForCache of Decoded: the transform of the client-go informers tests run
// on a clientset, so that their caches hold what the agent's hold.
func Transform(obj any) (any, error) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		o, err := Transform(tomb.Obj)
		tomb.Obj = o
		return tomb, err
	}
	if o, ok := obj.(runtime.Object); ok {
		d, err := Decoded(o)
		if err != nil {
			return nil, err
		}
		obj = d
	}
	return k8s.TrimForCache(obj)
}

// Cached is obj as the agent's cache holds it (Transform); it panics on an error, a test's.
func Cached(obj any) any { return must(Transform(obj)) }

// Decoded is o, an object of k8s.io/api, as the agent's client decodes it: a Node, Service or
// EndpointSlice through its protobuf encoding into the compact type of package k8s, a Pod or
// ConfigMap through its JSON into package api's; anything else as it is.
func Decoded(o runtime.Object) (runtime.Object, error) {
	switch o := o.(type) {
	case *corev1.Node:
		return viaProtobuf[k8s.Node](o)
	case *corev1.Service:
		return viaProtobuf[k8s.Service](o)
	case *discoveryv1.EndpointSlice:
		return viaProtobuf[k8s.EndpointSlice](o)
	case *corev1.Pod:
		return viaJSON[api.Pod](o, nil)
	case *corev1.ConfigMap:
		return viaJSON[api.ConfigMap](o, nil)
	}
	return o, nil
}

// Node is n as the agent's cache holds it.
func Node(n *corev1.Node) *k8s.Node { return must(viaProtobuf[k8s.Node](n)) }

// Pod is p as the agent reads it (package api).
func Pod(p *corev1.Pod) *api.Pod { return must(viaJSON[api.Pod](p, nil)) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("k8stest: %v", err))
	}
	return v
}

// viaProtobuf decodes o's protobuf encoding into a new T.
func viaProtobuf[T any, PT interface {
	*T
	Unmarshal([]byte) error
}](o interface{ Marshal() ([]byte, error) }) (PT, error) {
	b, err := o.Marshal()
	if err != nil {
		return nil, err
	}
	out := PT(new(T))
	if err := out.Unmarshal(b); err != nil {
		return nil, err
	}
	return out, nil
}

// viaJSON decodes o's JSON encoding into a new T; err is passed through, as a clientset call's.
func viaJSON[T any](o any, err error) (*T, error) {
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		return nil, err
	}
	return out, nil
}
