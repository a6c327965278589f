// Package k8stest gives tests the agent's k8s.API on a client-go clientset (the fake one, mostly),
// so that they seed objects and check requests as before. Only tests import it: it links the
// clientset, which the agent does not (pkg/k8s).
package k8stest

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/edgeplane/edgeplane/pkg/k8s"
)

// FromClientset is the k8s.API of cs.
func FromClientset(cs kubernetes.Interface) k8s.API { return api{cs} }

type api struct{ cs kubernetes.Interface }

func (a api) GetNode(ctx context.Context, name string) (*k8s.Node, error) {
	node, err := a.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return k8s.NodeOf(node), nil
}

func (a api) ListNodes(ctx context.Context) ([]*k8s.Node, error) {
	list, err := a.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return k8s.NodesOf(list), nil
}

func (a api) PatchNode(ctx context.Context, name string, patch []byte) (*corev1.Node, error) {
	return a.cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
}

func (a api) ListLeases(ctx context.Context, namespace, labelSelector string) (*coordinationv1.LeaseList, error) {
	return a.cs.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: labelSelector})
}

func (a api) GetLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	return a.cs.CoordinationV1().Leases(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (a api) CreateLease(ctx context.Context, namespace string, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return a.cs.CoordinationV1().Leases(namespace).Create(ctx, lease, metav1.CreateOptions{})
}

func (a api) UpdateLease(ctx context.Context, lease *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return a.cs.CoordinationV1().Leases(lease.Namespace).Update(ctx, lease, metav1.UpdateOptions{})
}

func (a api) DeleteLease(ctx context.Context, namespace, name string, pre metav1.Preconditions) error {
	return a.cs.CoordinationV1().Leases(namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &pre})
}

func (a api) GetSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return a.cs.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
}

func (a api) CreateEvent(ctx context.Context, event *corev1.Event) (*corev1.Event, error) {
	return a.cs.CoreV1().Events(event.Namespace).Create(ctx, event, metav1.CreateOptions{})
}

func (a api) PatchEvent(ctx context.Context, event *corev1.Event, patch []byte) (*corev1.Event, error) {
	return a.cs.CoreV1().Events(event.Namespace).Patch(ctx, event.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
}

func (a api) ListerWatcher(resource k8s.Resource, namespace string, fieldSelector fields.Selector) cache.ListerWatcher {
	var lw *cache.ListWatch
	switch resource {
	case k8s.Nodes:
		lw = listWatch(a.cs.CoreV1().Nodes().List, compactNodes(a.cs.CoreV1().Nodes().Watch), fieldSelector)
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

// compactNodes makes a watch of Nodes stream them as the API client's watches do: as k8s.Node
// (the informer of Nodes takes no other type).
func compactNodes(watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error)) func(context.Context, metav1.ListOptions) (watch.Interface, error) {
	return func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
		w, err := watchFunc(ctx, opts)
		if err != nil {
			return nil, err
		}
		return watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
			if n, ok := e.Object.(*corev1.Node); ok {
				e.Object = k8s.NodeOf(n)
			}
			return e, true
		}), nil
	}
}

func listWatch[L runtime.Object](
	list func(context.Context, metav1.ListOptions) (L, error),
	watchFunc func(context.Context, metav1.ListOptions) (watch.Interface, error),
	fieldSelector fields.Selector,
) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = fieldSelector.String()
			return list(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = fieldSelector.String()
			return watchFunc(ctx, opts)
		},
	}
}
