package controller

import (
	"slices"
	"sync"

	"k8s.io/client-go/tools/cache"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// nodeIndex is the Services with endpoints on each node (the EndpointSlices' nodeName), kept by
// the EndpointSlice event handler: a Node that comes, goes or moves can change only those
// Services' backends (whether this node reaches them, their pool for a topology), so its event
// requeues those and no other. Services are held by a small id (4 bytes an entry: 10,000
// Services of 15 endpoints are ~150,000 entries), and a node holds a Service once per slice
// with endpoints there, so that a slice's update or delete removes exactly what it added. Like
// sliceIndex, it may lag the cache by an event: that event then queues the Service itself.
type nodeIndex struct {
	mu     sync.Mutex
	byNode map[string][]uint32 // node name -> Service ids, one per slice with endpoints there
	ids    map[string]uint32   // Service key -> id
	keys   []string            // id -> Service key, "" when free
	refs   []uint32            // id -> its entries in byNode
	free   []uint32
}

// sliceNodes is the distinct node names of a slice's endpoints, sorted, from the cached slice
// (k8s.EndpointSlice) or a whole one (tests); nil for nil or a tombstone without a slice.
func sliceNodes(obj any) []string {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	var nodes []string
	switch s := obj.(type) {
	case *k8s.EndpointSlice:
		for _, e := range s.Endpoints {
			if n := e.Node(); n != "" && !slices.Contains(nodes, n) {
				nodes = append(nodes, n)
			}
		}
	case *api.EndpointSlice:
		for _, e := range s.Endpoints {
			if e.NodeName != nil && *e.NodeName != "" && !slices.Contains(nodes, *e.NodeName) {
				nodes = append(nodes, *e.NodeName)
			}
		}
	}
	slices.Sort(nodes)
	return nodes
}

// move replaces a slice's entries: those of its old version (Service oldSvc, endpoints on
// oldNodes; "" for none) by those of its new one.
func (x *nodeIndex) move(oldSvc string, oldNodes []string, svc string, nodes []string) {
	if oldSvc == svc && slices.Equal(oldNodes, nodes) {
		return // a status change of the endpoints: the common update
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if oldSvc != "" {
		for _, n := range oldNodes {
			x.removeLocked(n, oldSvc)
		}
	}
	if svc != "" {
		for _, n := range nodes {
			x.addLocked(n, svc)
		}
	}
}

func (x *nodeIndex) addLocked(node, svc string) {
	id, ok := x.ids[svc]
	if !ok {
		if x.ids == nil {
			x.ids, x.byNode = map[string]uint32{}, map[string][]uint32{}
		}
		if n := len(x.free); n > 0 {
			id, x.free = x.free[n-1], x.free[:n-1]
			x.keys[id] = svc
		} else {
			id = uint32(len(x.keys))
			x.keys, x.refs = append(x.keys, svc), append(x.refs, 0)
		}
		x.ids[svc] = id
	}
	x.refs[id]++
	x.byNode[node] = append(x.byNode[node], id)
}

func (x *nodeIndex) removeLocked(node, svc string) {
	id, ok := x.ids[svc]
	if !ok {
		return
	}
	ids := x.byNode[node]
	i := slices.Index(ids, id)
	if i < 0 {
		return
	}
	ids[i] = ids[len(ids)-1]
	if ids = ids[:len(ids)-1]; len(ids) == 0 {
		delete(x.byNode, node)
	} else {
		x.byNode[node] = ids
	}
	if x.refs[id]--; x.refs[id] == 0 {
		delete(x.ids, svc)
		x.keys[id] = ""
		x.free = append(x.free, id)
	}
}

// servicesOn is the keys of the Services with endpoints on the node called name, each once.
func (x *nodeIndex) servicesOn(node string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	ids := slices.Clone(x.byNode[node])
	slices.Sort(ids)
	ids = slices.Compact(ids) // a Service with endpoints there in two slices
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = x.keys[id]
	}
	return out
}

// nodeMoves is the nodes whose Node changed since the node view last placed them, by name.
type nodeMoves struct {
	mu    sync.Mutex
	names map[string]struct{}
}

func (m *nodeMoves) add(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names == nil {
		m.names = map[string]struct{}{}
	}
	m.names[name] = struct{}{}
}

// take empties the set and returns what it held.
func (m *nodeMoves) take() map[string]struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := m.names
	m.names = nil
	return names
}
