package k8s

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// daemonSets is the resource OwnDaemonSet watches, by metadata only: the agent links no apps/v1
// types for one object's name, UID and deletion timestamp.
var daemonSets = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}

// namespaces is the DaemonSet's namespace, asked about at SIGTERM (Deleted).
var namespaces = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// OwnDaemonSet follows the DaemonSet whose pods run the agent, so that on SIGTERM the agent can
// tell being replaced (a rolling update, an eviction, a restart: the DaemonSet stays) from being
// uninstalled (the DaemonSet deleted, as `kubectl delete -k` does). Only positive evidence counts:
// the DaemonSet seen, then seen deleted, by a watch event or by the API server answering NotFound
// or a deletion timestamp for the UID seen. An API server out of reach, a refused token or a
// DaemonSet never seen all mean "replaced": an edge node cut off from its control plane never
// uninstalls itself.
type OwnDaemonSet struct {
	namespace, name string
	client          metadata.Interface
	logger          klog.Logger

	mu      sync.Mutex
	uid     types.UID // the DaemonSet seen alive last; "" until then
	deleted bool      // that DaemonSet was then seen deleted (or being deleted)

	// refusedWait is how long Deleted waits for the watch when the API server refuses its GET
	// (ownerRefusedWait; shorter in tests).
	refusedWait time.Duration
	stop        context.CancelFunc // ends the watch (Stop)
}

// ownerRefusedWait bounds Deleted's wait for the watch's event once the API server refuses its
// GET (403, 401): `kubectl delete -k` deletes the agent's RBAC and service account in the same
// breath as the DaemonSet, so at the SIGTERM the agent may no longer be allowed to ask, while the
// watch it opened before still reports the deletion a moment later. Well inside the pod's
// termination grace period (30 s).
const ownerRefusedWait = 5 * time.Second

// WatchOwnDaemonSet starts following the DaemonSet namespace/name until Stop, not until ctx is
// done (ctx gives the logger): the SIGTERM that ends the agent's context often comes a moment
// before the watch event of the deletion that caused it, and Deleted, asked after the SIGTERM,
// waits for that event when the API server refuses to answer (the RBAC that `kubectl delete -k`
// deletes first).
func (c *Client) WatchOwnDaemonSet(ctx context.Context, namespace, name string) *OwnDaemonSet {
	return watchOwnDaemonSet(ctx, c.metadata, namespace, name)
}

func watchOwnDaemonSet(ctx context.Context, client metadata.Interface, namespace, name string) *OwnDaemonSet {
	ctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	d := &OwnDaemonSet{namespace: namespace, name: name, client: client, logger: klog.FromContext(ctx), refusedWait: ownerRefusedWait, stop: stop}
	resource := client.Resource(daemonSets).Namespace(namespace)
	byName := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = byName
			return resource.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = byName
			return resource.Watch(ctx, opts)
		},
	}
	// Lists, not streamed initial lists, as the other informers (listsOnly).
	informer := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, listsOnly{}),
		&metav1.PartialObjectMetadata{}, cache.SharedIndexInformerOptions{})
	// It fails only once the informer runs.
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.seen(obj) },
		UpdateFunc: func(_, obj any) { d.seen(obj) },
		DeleteFunc: func(obj any) {
			if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
				d.gone(m.UID)
			}
		},
	})
	go informer.RunWithContext(ctx)
	return d
}

// Stop ends the watch; Deleted still answers from what it saw.
func (d *OwnDaemonSet) Stop() {
	if d.stop != nil {
		d.stop()
	}
}

func (d *OwnDaemonSet) seen(obj any) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if m.UID != d.uid {
		d.logger.Info("Following the DaemonSet running this agent: deleting it uninstalls edgeplane from this node",
			"daemonset", d.namespace+"/"+d.name, "uid", m.UID)
	}
	d.uid, d.deleted = m.UID, m.DeletionTimestamp != nil
}

func (d *OwnDaemonSet) gone(uid types.UID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if uid == d.uid && uid != "" {
		d.deleted = true
	}
}

// state is what the watch has seen: the UID, and whether that DaemonSet was deleted.
func (d *OwnDaemonSet) state() (types.UID, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.uid, d.deleted
}

// deletedCheckTimeout bounds the one GET Deleted makes: the kubelet's SIGTERM can come before the
// watch event that explains it.
const deletedCheckTimeout = 2 * time.Second

// Deleted reports whether the DaemonSet, once seen, has been deleted, and how that is known. When
// the watch has not said so it asks the API server once: the pod's SIGTERM can overtake the event.
func (d *OwnDaemonSet) Deleted(ctx context.Context) (bool, string) {
	uid, deleted := d.state()
	switch {
	case uid == "":
		return false, "never seen"
	case deleted:
		return true, "watch"
	}
	ctx, cancel := context.WithTimeout(ctx, deletedCheckTimeout)
	defer cancel()
	m, err := d.client.Resource(daemonSets).Namespace(d.namespace).Get(ctx, d.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, "not found"
	case err != nil:
		// The event may have arrived meanwhile, or arrive a moment later when the install's
		// RBAC went first; else nothing proves a deletion.
		if (apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err)) && d.waitDeleted(d.refusedWait) {
			return true, "watch, after the API server refused: " + err.Error()
		}
		if _, deleted := d.state(); deleted {
			return true, "watch"
		}
		return false, "unknown: " + err.Error()
	case m.UID == uid && m.DeletionTimestamp != nil:
		return true, "deletion timestamp"
	case m.UID != uid:
		// Deleted and created again (kubectl delete --cascade=orphan, then apply): the new one
		// adopts the pods and goes on.
		return false, "recreated"
	}
	// The namespace being deleted deletes the DaemonSet too, and its pods may go first (the
	// namespace controller deletes them in no particular order; `kubectl delete -k` deletes the
	// namespace first).
	if ns, err := d.client.Resource(namespaces).Get(ctx, d.namespace, metav1.GetOptions{}); err == nil && ns.DeletionTimestamp != nil {
		return true, "namespace being deleted"
	}
	return false, "present"
}

// waitDeleted waits up to wait for the watch to see the DaemonSet deleted.
func (d *OwnDaemonSet) waitDeleted(wait time.Duration) bool {
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		if _, deleted := d.state(); deleted {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
