package controller

import (
	"iter"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// The service maps of bpf/lib/lb.h as the ServiceReconciler sees them; pkg/controller/maptables
// implements these over the lb maps.

// ServiceEntry is an lb_svc_map value: the frontend's backend set and how to use it.
type ServiceEntry struct {
	ID              uint32 // backend set: BackendSlot{ID, 0..Count-1}
	Count           uint16
	Flags           service.Flags
	AffinityTimeout uint32 // seconds
	// Unreachable counts the backends left out because this node cannot reach them
	// (service.Frontend.Unreachable); for edgeplanectl and the metrics, the programs do not read it.
	Unreachable uint16
}

// BackendSlot is an lb_backend_map key.
type BackendSlot struct {
	ID   uint32
	Slot uint32
}

// AffinityKey is an lb_affinity_map key: a client of a backend set.
type AffinityKey struct {
	ID     uint32
	Client netip.Addr
}

// Affinity is an lb_affinity_map value: the backend the client sticks to.
type Affinity struct {
	Backend  service.Backend
	LastSeen uint64 // CLOCK_BOOTTIME nanoseconds
}

// FrontendTable is lb_svc_map.
type FrontendTable interface {
	Upsert(service.FrontendKey, ServiceEntry) error
	Delete(service.FrontendKey) error // deleting an absent entry is not an error
	List() (map[service.FrontendKey]ServiceEntry, error)
}

// BackendTable is lb_backend_map.
type BackendTable interface {
	Upsert(BackendSlot, service.Backend) error
	Delete(BackendSlot) error // deleting an absent entry is not an error
	List() (map[BackendSlot]service.Backend, error)
}

// BackendSetWriter is a BackendTable that also writes a whole backend set at once, slots 0..n-1
// of id (maptables': one system call per set where the kernel has batch operations, instead of
// one per slot). On error some slots may be written.
type BackendSetWriter interface {
	UpsertSet(id uint32, backends []service.Backend) error
}

// BackendWalker is a BackendTable that also visits its slots one at a time (maptables': batch
// reads), so that a restart adopts 100,000 pinned slots without first listing them into a map
// of as many entries. Tables without it are listed.
type BackendWalker interface {
	Walk(fn func(BackendSlot, service.Backend)) error
}

// WalkTable visits every entry of t: in batches where the table walks itself (maptables' Walk,
// as BackendWalker), else from its listing.
func WalkTable[K comparable, V any](t interface{ List() (map[K]V, error) }, fn func(K, V)) error {
	if w, ok := t.(interface{ Walk(func(K, V)) error }); ok {
		return w.Walk(fn)
	}
	all, err := t.List()
	for k, v := range all {
		fn(k, v)
	}
	return err
}

// AffinityTable is lb_affinity_map (the programs create its entries).
type AffinityTable interface {
	Upsert(AffinityKey, Affinity) error
	Delete(AffinityKey) error // deleting an absent entry is not an error
	List() (map[AffinityKey]Affinity, error)
}

// FrontendHook is told, after the fact, of what the ServiceReconciler does to lb_svc_map: each
// frontend it writes (Written) or deletes (Deleted), and what the map holds each time it reads it
// (Listed: the whole map, at the start-up pass and at every resync, there once the entries nobody
// wrote are deleted). It is the one explicit step for what must follow the frontends outside the
// maps: the agent's is the node's routes to externalIPs and LoadBalancer IPs
// (pkg/controller/externalroutes). It cannot fail a map write: it handles and retries its own
// errors (Listed comes again at the next resync). Listed's sequence is valid during the call
// only.
type FrontendHook interface {
	FrontendWritten(service.FrontendKey, ServiceEntry)
	FrontendDeleted(service.FrontendKey)
	FrontendsListed(iter.Seq2[service.FrontendKey, ServiceEntry])
}
