package maptables

import (
	"fmt"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// The ServiceReconciler's tables (controller/services_tables.go) over pkg/maps/lb.

func svcKey(k service.FrontendKey) (lb.SvcKey, error) {
	vip, err := maps.IPv4From(k.VIP)
	if err != nil {
		return lb.SvcKey{}, fmt.Errorf("frontend %s: %w", k, err)
	}
	return lb.SvcKey{VIP: vip, Port: lb.PortFrom(k.Port), Proto: lbProto(k.Proto), Scope: lbScope(k.Scope)}, nil
}

func frontendKey(k lb.SvcKey) service.FrontendKey {
	return service.FrontendKey{VIP: k.VIP.Addr(), Port: k.Port.Uint16(), Proto: serviceProto(k.Proto), Scope: serviceScope(k.Scope)}
}

func lbBackend(b service.Backend) (lb.Backend, error) {
	ip, err := maps.IPv4From(b.IP)
	if err != nil {
		return lb.Backend{}, fmt.Errorf("backend %s: %w", b, err)
	}
	return lb.Backend{IP: ip, Port: lb.PortFrom(b.Port)}, nil
}

// BackendOf is the backend an lb map value names (lb_backend_map, lb_affinity_map, lb_ct_map).
func BackendOf(ip maps.IPv4, port lb.Port) service.Backend {
	return service.Backend{IP: ip.Addr(), Port: port.Uint16()}
}

// ConntrackBackend is the backend of a forward lb_ct_map entry as the ServiceReconciler names it,
// for the connection tracking garbage collector (pkg/controller/conntrackgc, which asks
// controller.ServiceReconciler.UnusedBackends).
func ConntrackBackend(k lb.CTKey, v lb.CT) controller.BackendKey {
	return controller.BackendKey{Backend: BackendOf(v.Addr, v.Port), Proto: serviceProto(k.Proto)}
}

type frontendTable struct{ m *lb.SvcMap }

func (t frontendTable) Upsert(k service.FrontendKey, e controller.ServiceEntry) error {
	key, err := svcKey(k)
	if err != nil {
		return err
	}
	return t.m.Upsert(key, lb.Svc{ID: e.ID, Count: e.Count, Flags: lbFlags(e.Flags), AffinityTimeout: e.AffinityTimeout, Unreachable: e.Unreachable})
}

func (t frontendTable) Delete(k service.FrontendKey) error {
	key, err := svcKey(k)
	if err != nil {
		return err
	}
	return t.m.Delete(key)
}

func (t frontendTable) List() (map[service.FrontendKey]controller.ServiceEntry, error) {
	out := map[service.FrontendKey]controller.ServiceEntry{}
	err := t.Walk(func(k service.FrontendKey, e controller.ServiceEntry) { out[k] = e })
	return out, err
}

// Walk visits every frontend, read in batches, without a map of them all (the snapshot's writes).
func (t frontendTable) Walk(fn func(service.FrontendKey, controller.ServiceEntry)) error {
	return t.m.IterateBatch(func(k lb.SvcKey, v lb.Svc) bool {
		fn(frontendKey(k), controller.ServiceEntry{ID: v.ID, Count: v.Count, Flags: serviceFlags(v.Flags), AffinityTimeout: v.AffinityTimeout, Unreachable: v.Unreachable})
		return true
	})
}

type backendTable struct{ m *lb.BackendMap }

func (t backendTable) Upsert(s controller.BackendSlot, b service.Backend) error {
	v, err := lbBackend(b)
	if err != nil {
		return err
	}
	return t.m.Upsert(lb.BackendKey{SvcID: s.ID, Slot: s.Slot}, v)
}

// UpsertSet writes a whole backend set in one system call (controller.BackendSetWriter).
func (t backendTable) UpsertSet(id uint32, backends []service.Backend) error {
	keys, values := make([]lb.BackendKey, len(backends)), make([]lb.Backend, len(backends))
	for slot, b := range backends {
		v, err := lbBackend(b)
		if err != nil {
			return err
		}
		keys[slot], values[slot] = lb.BackendKey{SvcID: id, Slot: uint32(slot)}, v
	}
	return t.m.UpsertBatch(keys, values)
}

func (t backendTable) Delete(s controller.BackendSlot) error {
	return t.m.Delete(lb.BackendKey{SvcID: s.ID, Slot: s.Slot})
}

// Walk visits every slot with batch reads (controller.BackendWalker).
func (t backendTable) Walk(fn func(controller.BackendSlot, service.Backend)) error {
	return t.m.IterateBatch(func(k lb.BackendKey, v lb.Backend) bool {
		fn(controller.BackendSlot{ID: k.SvcID, Slot: k.Slot}, BackendOf(v.IP, v.Port))
		return true
	})
}

func (t backendTable) List() (map[controller.BackendSlot]service.Backend, error) {
	out := map[controller.BackendSlot]service.Backend{}
	err := t.m.IterateBatch(func(k lb.BackendKey, v lb.Backend) bool {
		out[controller.BackendSlot{ID: k.SvcID, Slot: k.Slot}] = BackendOf(v.IP, v.Port)
		return true
	})
	return out, err
}

type affinityTable struct{ m *lb.AffinityMap }

func affinityKey(k controller.AffinityKey) (lb.AffinityKey, error) {
	client, err := maps.IPv4From(k.Client)
	if err != nil {
		return lb.AffinityKey{}, fmt.Errorf("affinity client: %w", err)
	}
	return lb.AffinityKey{SvcID: k.ID, Client: client}, nil
}

func (t affinityTable) Upsert(k controller.AffinityKey, a controller.Affinity) error {
	key, err := affinityKey(k)
	if err != nil {
		return err
	}
	b, err := lbBackend(a.Backend)
	if err != nil {
		return err
	}
	return t.m.Upsert(key, lb.Affinity{IP: b.IP, Port: b.Port, LastSeen: a.LastSeen})
}

func (t affinityTable) Delete(k controller.AffinityKey) error {
	key, err := affinityKey(k)
	if err != nil {
		return err
	}
	return t.m.Delete(key)
}

func (t affinityTable) List() (map[controller.AffinityKey]controller.Affinity, error) {
	out := map[controller.AffinityKey]controller.Affinity{}
	err := t.m.IterateBatch(func(k lb.AffinityKey, v lb.Affinity) bool {
		out[controller.AffinityKey{ID: k.SvcID, Client: netip.AddrFrom4(k.Client)}] =
			controller.Affinity{Backend: BackendOf(v.IP, v.Port), LastSeen: v.LastSeen}
		return true
	})
	return out, err
}
