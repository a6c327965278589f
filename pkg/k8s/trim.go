package k8s

import (
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// lastApplied is kubectl apply's copy of the whole object: as large as the object, read by nobody
// here.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// TrimForCache is the informers' transform: it drops, before an object enters a cache, what no
// reconciler of the agent reads, so that 10,000 Services and their EndpointSlices cost the agent
// what it uses rather than what the API server stores. Services and EndpointSlices are cached as
// the compact Service and EndpointSlice of this package, Nodes as its compact Node; from every
// other object managedFields (server-side apply bookkeeping, often larger than the spec) and
// kubectl's last-applied annotation go, in place: the informer owns it until it enters its
// store. It may see an object twice
// (client-go's watch-list transforms what it streams, then again what it hands to the
// informer): trimming is idempotent.
func TrimForCache(obj any) (any, error) {
	switch o := obj.(type) {
	case *EndpointSlice, *Service, *Node:
		return o, nil
	case *api.EndpointSlice:
		return compactSlice(o), nil
	case *api.Service:
		return compactService(o), nil
	case *api.Node:
		return compactNode(o), nil
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a[lastApplied] != "" {
			delete(a, lastApplied)
		}
	}
	return obj, nil
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
