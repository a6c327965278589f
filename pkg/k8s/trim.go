package k8s

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
)

// lastApplied is kubectl apply's copy of the whole object: as large as the object, read by nobody
// here.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// TrimForCache is the informers' transform: it drops, before an object enters a cache, what no
// reconciler of the agent reads, so that 10,000 Services and their EndpointSlices cost the agent
// what it uses rather than what the API server stores. Dropped from every object: managedFields
// (server-side apply bookkeeping, often larger than the spec) and kubectl's last-applied
// annotation; from Nodes, the image list (up to 50 entries a node); from EndpointSlice endpoints,
// targetRef, hostname and deprecatedTopology (pkg/service reads addresses, conditions, nodeName,
// zone and hints). Whatever pkg/controller or pkg/service starts reading must stay out of this
// list. Objects are trimmed in place: the informer owns them until they enter its store.
func TrimForCache(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[lastApplied] != "" {
			delete(a, lastApplied)
		}
	}
	switch o := obj.(type) {
	case *corev1.Node:
		o.Status.Images = nil
	case *discoveryv1.EndpointSlice:
		for i := range o.Endpoints {
			e := &o.Endpoints[i]
			e.TargetRef, e.Hostname, e.DeprecatedTopology = nil, nil, nil
		}
	}
	return obj, nil
}
