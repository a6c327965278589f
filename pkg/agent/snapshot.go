package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
	"github.com/edgeplane/edgeplane/pkg/service"
	"github.com/edgeplane/edgeplane/pkg/snapshot"
)

// The agent's snapshot of its last good state (pkg/snapshot, docs/autonomy.md): kept while the
// reconcilers own the maps, and used at start when this node rebooted while cut off from the API
// server: the pins are gone (bpffs empty) and the informers do not sync within restoreWait. The
// agent then registers from the snapshot (node IP, pod CIDR, VTEP MAC, domain), programs the maps
// with the snapshot's entries, writes the CNI's node config so that pods can be re-created, and
// repairs the Service backends that were this node's pods from the name index (their new IPs)
// until the API server answers; then it starts as usual and the reconcilers' start-up pass makes
// the maps equal to the API server's state (adopting, then deleting what no object names).

// restoreWait is how long a start with an empty bpffs waits for the informers before it
// programs the datapath from the snapshot instead.
const restoreWait = 5 * time.Second

// snapshotInterval is the least time between two writes of the snapshot: changes are
// collected and written together.
const snapshotInterval = time.Second

// snapshotCostFactor spaces the writes of a large snapshot: the next write waits this many times
// as long as the last one took, so keeping the snapshot costs at most 1/snapshotCostFactor of a
// core under constant churn.
const snapshotCostFactor = 10

// repairInterval is how often, when started from the snapshot, the name index is read for pods
// re-created with new IPs.
const repairInterval = time.Second

// mapTables is what the reconcilers write: maptables.Tables, or the snapshot's view of it.
type mapTables interface {
	Routes() controller.RouteTable
	Nodes() controller.NodeTable
	Endpoints() controller.EndpointTable
	Domains() controller.DomainTable
	Frontends() controller.FrontendTable
	Backends() controller.BackendTable
	Affinity() controller.AffinityTable
	Conntrack() *lb.CTMap
	AffinityMap() *lb.AffinityMap
}

// snapshotKeeper writes the snapshot when what the reconcilers wrote changed.
type snapshotKeeper struct {
	dir      string
	maxBytes int
	tables   mapTables // the real ones, listed for each write
	dirty    atomic.Bool
	// node is this node's registration, taken before the reconcilers start (the convergence loop
	// rewrites the agent's device field, with the same MAC, while the keeper reads).
	node snapshot.Node
}

// track returns t with every write marking the snapshot out of date.
func (k *snapshotKeeper) track(t mapTables) mapTables {
	k.tables = t
	k.dirty.Store(true)
	return trackedTables{t, &k.dirty}
}

// keepSnapshot writes the snapshot whenever the maps changed, once the reconcilers have
// programmed the API server's state (ready), until ctx is done.
func (a *Agent) keepSnapshot(ctx context.Context, pods k8s.Informer, ready func() bool) {
	k := a.snapshots
	if k == nil {
		return
	}
	logger := klog.FromContext(ctx).WithValues("path", snapshot.Path(k.dir))
	var lastErr string
	var next time.Time // no write before: a large snapshot's writes are spaced by their cost
	tick := time.NewTicker(snapshotInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !ready() || time.Now().Before(next) || !k.dirty.Swap(false) {
			continue
		}
		start := time.Now()
		s, err := a.collectSnapshot(pods.GetIndexer())
		if err == nil {
			err = snapshot.Write(k.dir, s, k.maxBytes)
		}
		next = start.Add(snapshotCostFactor * time.Since(start))
		switch {
		case err != nil && err.Error() != lastErr:
			logger.Error(err, "Writing the snapshot of the last good state; the previous one stays")
		case err == nil && lastErr != "":
			logger.Info("Snapshot of the last good state written again")
		}
		if err != nil {
			lastErr = err.Error()
			k.dirty.Store(true) // try again at the next tick that sees a change
			continue
		}
		lastErr = ""
	}
}

// collectSnapshot reads the maps and this node's registration into a snapshot.
func (a *Agent) collectSnapshot(pods podLister) (*snapshot.State, error) {
	t := a.snapshots.tables
	a.localMu.Lock()
	local := a.local
	a.localMu.Unlock()
	s := &snapshot.State{Written: time.Now().UTC().Format(time.RFC3339), Node: a.snapshots.node}
	s.Node.Domain, s.Node.DomainID, s.Node.Gateway, s.Node.IsGateway = local.Domain, local.DomainID, local.Gateway, local.IsGateway
	if r := a.routing.Load(); r != nil && r.Encapsulation == domain.Route {
		s.Node.RouteMode = true
	}
	// The maps are walked in batches into the lists, made at their size where it is known:
	// listed into maps first, or grown by appending, 150,000 backends (16 bytes each) and 10,000
	// frontends would take several times their size at every write.
	err := controller.WalkTable(t.Routes(), func(p netip.Prefix, r controller.Route) {
		s.Routes = append(s.Routes, snapshot.Route{PodCIDR: p, NodeIP: r.NodeIP, Domain: r.Domain, Encap: uint8(r.Encap), Local: r.Local})
	})
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	err = controller.WalkTable(t.Nodes(), func(ip netip.Addr, n controller.Node) {
		s.Nodes = append(s.Nodes, snapshot.Peer{NodeIP: ip, VTEPMAC: n.VTEPMAC.String(), NextHopMAC: macString(n.NextHopMAC), Domain: n.Domain})
	})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	domains, err := t.Domains().List()
	if err != nil {
		return nil, fmt.Errorf("listing domains: %w", err)
	}
	s.Domains = make([]snapshot.Domain, 0, len(domains))
	for id, d := range domains {
		s.Domains = append(s.Domains, snapshot.Domain{ID: id, Name: d.Name, Reachable: d.Reachable, Local: d.Local})
	}
	err = controller.WalkTable(t.Frontends(), func(k service.FrontendKey, e controller.ServiceEntry) {
		s.Frontends = append(s.Frontends, snapshot.Frontend{VIP: k.VIP, Port: k.Port, Proto: uint8(k.Proto), Scope: uint8(k.Scope),
			ID: e.ID, Count: e.Count, Flags: uint16(e.Flags), AffinityTimeout: e.AffinityTimeout, Unreachable: e.Unreachable})
	})
	if err != nil {
		return nil, fmt.Errorf("listing Service frontends: %w", err)
	}
	slots, counted := 0, make(map[uint32]bool, len(s.Frontends))
	for _, f := range s.Frontends {
		if !counted[f.ID] {
			counted[f.ID], slots = true, slots+int(f.Count)
		}
	}
	s.Backends = make([]snapshot.Backend, 0, slots)
	local4 := map[netip.Addr]bool{}
	err = controller.WalkTable(t.Backends(), func(slot controller.BackendSlot, b service.Backend) {
		s.Backends = append(s.Backends, snapshot.Backend{ID: slot.ID, Slot: slot.Slot, IP: snapshot.IPv4Of(b.IP), Port: b.Port})
		if a.podCIDR.Contains(b.IP) {
			local4[b.IP] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listing Service backends: %w", err)
	}
	s.PodBackends = podBackends(pods.List(), local4)
	sortSnapshot(s)
	return s, nil
}

// podLister is the Pod informer's store as collectSnapshot reads it.
type podLister interface{ List() []any }

// podBackends names the pods (of this node's Pod informer) whose IP is one of backends.
func podBackends(pods []any, backends map[netip.Addr]bool) []snapshot.PodBackend {
	var out []snapshot.PodBackend
	for _, o := range pods {
		p, ok := o.(*api.Pod)
		if !ok {
			continue
		}
		for _, ip := range p.Status.PodIPs {
			addr, err := netip.ParseAddr(ip.IP)
			if err == nil && backends[addr] {
				out = append(out, snapshot.PodBackend{IP: addr, Namespace: p.Namespace, Name: p.Name})
			}
		}
	}
	return out
}

// sortSnapshot orders the lists, so that equal states give equal files.
func sortSnapshot(s *snapshot.State) {
	slices.SortFunc(s.Routes, func(a, b snapshot.Route) int { return a.PodCIDR.Addr().Compare(b.PodCIDR.Addr()) })
	slices.SortFunc(s.Nodes, func(a, b snapshot.Peer) int { return a.NodeIP.Compare(b.NodeIP) })
	slices.SortFunc(s.Domains, func(a, b snapshot.Domain) int { return int(a.ID) - int(b.ID) })
	slices.SortFunc(s.Frontends, func(a, b snapshot.Frontend) int {
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		return int(a.Port)<<16 + int(a.Proto)<<8 + int(a.Scope) - (int(b.Port)<<16 + int(b.Proto)<<8 + int(b.Scope))
	})
	slices.SortFunc(s.Backends, func(a, b snapshot.Backend) int {
		if a.ID != b.ID {
			return int(a.ID) - int(b.ID)
		}
		return int(a.Slot) - int(b.Slot)
	})
	slices.SortFunc(s.PodBackends, func(a, b snapshot.PodBackend) int { return a.IP.Compare(b.IP) })
}

func macString(m net.HardwareAddr) string {
	if m == nil {
		return ""
	}
	return m.String()
}

// pinsPresent says whether a previous agent left its pins (node_cfg_map, which it writes before
// it is ready): false after a reboot, which empties the bpffs.
func (a *Agent) pinsPresent() bool {
	_, err := os.Stat(maps.PinPath(a.cfg.BPFFSRoot, nodecfg.MapName))
	return err == nil
}

// snapshotToRestore returns the snapshot to program the datapath from, or nil for the usual
// start: there are pins (an agent restart: the pins are the better state), there is no usable
// snapshot (logged as a warning), or the informers synced within restoreWait.
func (a *Agent) snapshotToRestore(ctx context.Context, inf *k8s.Informers, pinned bool) *snapshot.State {
	if a.cfg.SnapshotDir == "" || pinned {
		return nil
	}
	logger := klog.FromContext(ctx).WithValues("path", snapshot.Path(a.cfg.SnapshotDir))
	s, err := snapshot.Read(a.cfg.SnapshotDir, snapshot.DefaultMaxBytes)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		logger.Error(err, "Ignoring the snapshot of the last good state")
		return nil
	case s.Node.Name != a.cfg.NodeName || s.Node.ClusterCIDR != a.cfg.ClusterCIDR:
		logger.Info("Ignoring the snapshot of the last good state: written for another node or cluster CIDR",
			"node", s.Node.Name, "clusterCIDR", s.Node.ClusterCIDR)
		return nil
	}
	// Whether or not the informers sync: they may sync from a cache of the objects as they were
	// before the reboot (podmoves.go).
	a.moves = &podMoves{owners: s.PodBackends, runDir: a.cfg.RunDir}
	waitCtx, cancel := context.WithTimeout(ctx, restoreWait)
	defer cancel()
	if cache.WaitForCacheSync(waitCtx.Done(), inf.Nodes().HasSynced, inf.Services().HasSynced, inf.EndpointSlices().HasSynced) {
		return nil
	}
	if ctx.Err() != nil {
		return nil
	}
	logger.Info("No pinned datapath and the API server did not answer: programming the datapath from the snapshot of the last good state",
		"written", s.Written, "wait", restoreWait, "routes", len(s.Routes), "frontends", len(s.Frontends), "backends", len(s.Backends))
	return s
}

// registerFromSnapshot sets this node's registration from s, as register does from the API server.
func (a *Agent) registerFromSnapshot(s *snapshot.State) error {
	var err error
	if a.underlay, err = netdev.FindUnderlay(a.cfg.UnderlayInterface, s.Node.NodeIP); err != nil {
		return err
	}
	if a.underlay.IP != s.Node.NodeIP {
		return fmt.Errorf("the snapshot's node IP %s is not this node's underlay address %s", s.Node.NodeIP, a.underlay.IP)
	}
	if a.vtepMAC, err = net.ParseMAC(s.Node.VTEPMAC); err != nil {
		return fmt.Errorf("the snapshot's VTEP MAC: %w", err)
	}
	a.podCIDR = s.Node.PodCIDR
	a.local = controller.LocalState{Domain: s.Node.Domain, DomainID: s.Node.DomainID, Gateway: s.Node.Gateway, IsGateway: s.Node.IsGateway}
	if s.Node.RouteMode {
		a.routing.Store(&domain.NodeRouting{Domain: s.Node.Domain, Encapsulation: domain.Route})
	}
	return nil
}

// restoreMaps writes the snapshot's entries into the maps, the backends of this node's pods
// that the name index knows under a new IP already repaired.
func restoreMaps(t mapTables, s *snapshot.State, pods map[netip.Addr]nameindex.Pod) error {
	var errs []error
	for _, d := range s.Domains {
		errs = append(errs, t.Domains().Upsert(d.ID, controller.Domain{Name: d.Name, Reachable: d.Reachable, Local: d.Local}))
	}
	for _, n := range s.Nodes {
		vtep, err := net.ParseMAC(n.VTEPMAC)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.NodeIP, err))
			continue
		}
		nextHop, _ := net.ParseMAC(n.NextHopMAC) // "": unresolved, the kernel resolves it
		errs = append(errs, t.Nodes().Upsert(n.NodeIP, controller.Node{VTEPMAC: vtep, NextHopMAC: nextHop, Domain: n.Domain}))
	}
	for _, r := range s.Routes {
		errs = append(errs, t.Routes().Upsert(r.PodCIDR, controller.Route{NodeIP: r.NodeIP, Domain: r.Domain, Encap: controller.Encap(r.Encap), Local: r.Local}))
	}
	// Backends before the frontends that point at them.
	moved := movedPods(s.PodBackends, pods)
	for _, b := range s.Backends {
		ip := b.IP.Addr()
		if to, ok := moved[ip]; ok {
			ip = to
		}
		errs = append(errs, t.Backends().Upsert(controller.BackendSlot{ID: b.ID, Slot: b.Slot}, service.Backend{IP: ip, Port: b.Port}))
	}
	for _, f := range s.Frontends {
		errs = append(errs, t.Frontends().Upsert(
			service.FrontendKey{VIP: f.VIP, Port: f.Port, Proto: service.Proto(f.Proto), Scope: service.Scope(f.Scope)},
			controller.ServiceEntry{ID: f.ID, Count: f.Count, Flags: service.Flags(f.Flags), AffinityTimeout: f.AffinityTimeout, Unreachable: f.Unreachable}))
	}
	return errors.Join(errs...)
}

// movedPods maps each backend address of the snapshot whose pod (by namespace/name) now holds
// another address in the name index to that address.
func movedPods(owners []snapshot.PodBackend, pods map[netip.Addr]nameindex.Pod) map[netip.Addr]netip.Addr {
	now := map[string]netip.Addr{}
	for ip, p := range pods {
		if name := p.FullName(); name != "" {
			now[name] = ip
		}
	}
	moved := map[netip.Addr]netip.Addr{}
	for _, o := range owners {
		name := o.Name
		if o.Namespace != "" {
			name = o.Namespace + "/" + o.Name
		}
		if ip, ok := now[name]; ok && ip != o.IP {
			moved[o.IP] = ip
		}
	}
	return moved
}

// localPods reads the name index's pods that hold their address now: those endpoints_map has.
func localPods(runDir string, endpoints controller.EndpointTable) (map[netip.Addr]nameindex.Pod, error) {
	pods, err := nameindex.ReadPods(runDir)
	switch {
	case errors.Is(err, fs.ErrNotExist): // no pod re-created yet
		pods = map[netip.Addr]nameindex.Pod{}
	case err != nil && pods == nil:
		return nil, err
	}
	attached, err := endpoints.List()
	if err != nil {
		return nil, err
	}
	for ip := range pods {
		if _, ok := attached[ip]; !ok {
			delete(pods, ip)
		}
	}
	return pods, nil
}

// repairBackends rewrites, every repairInterval until ctx is done, the backends whose pod came
// back under a new address since the snapshot was written (the name index says so).
func repairBackends(ctx context.Context, t mapTables, s *snapshot.State, runDir string, repairedPod func()) {
	logger := klog.FromContext(ctx)
	repaired := map[netip.Addr]netip.Addr{}
	for {
		pods, err := localPods(runDir, t.Endpoints())
		if err != nil {
			logger.Error(err, "Reading the name index for re-created pods")
		}
		for from, to := range movedPods(s.PodBackends, pods) {
			if repaired[from] == to {
				continue
			}
			var errs []error
			for _, b := range s.Backends {
				if b.IP.Addr() == from {
					errs = append(errs, t.Backends().Upsert(controller.BackendSlot{ID: b.ID, Slot: b.Slot}, service.Backend{IP: to, Port: b.Port}))
				}
			}
			if err := errors.Join(errs...); err != nil {
				logger.Error(err, "Repairing the Service backends of a re-created pod; will retry", "from", from, "to", to)
				continue
			}
			repaired[from] = to
			repairedPod()
			logger.Info("Service backends of a pod re-created with a new IP repaired from the name index, until the API server answers",
				"from", from, "to", to)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(repairInterval):
		}
	}
}

// trackedTables are tables whose every write marks dirty.
type trackedTables struct {
	mapTables
	dirty *atomic.Bool
}

func (t trackedTables) Routes() controller.RouteTable {
	return trackedTable[netip.Prefix, controller.Route]{t.mapTables.Routes(), t.dirty}
}
func (t trackedTables) Nodes() controller.NodeTable {
	return trackedTable[netip.Addr, controller.Node]{t.mapTables.Nodes(), t.dirty}
}
func (t trackedTables) Domains() controller.DomainTable {
	return trackedTable[uint32, controller.Domain]{t.mapTables.Domains(), t.dirty}
}
func (t trackedTables) Frontends() controller.FrontendTable {
	return trackedTable[service.FrontendKey, controller.ServiceEntry]{t.mapTables.Frontends(), t.dirty}
}
func (t trackedTables) Backends() controller.BackendTable {
	return trackedBackends{trackedTable[controller.BackendSlot, service.Backend]{t.mapTables.Backends(), t.dirty}}
}

// table is the shape of the controller's table interfaces.
type table[K comparable, V any] interface {
	Upsert(K, V) error
	Delete(K) error
	List() (map[K]V, error)
}

type trackedTable[K comparable, V any] struct {
	table[K, V]
	dirty *atomic.Bool
}

func (t trackedTable[K, V]) Upsert(k K, v V) error { t.dirty.Store(true); return t.table.Upsert(k, v) }
func (t trackedTable[K, V]) Delete(k K) error      { t.dirty.Store(true); return t.table.Delete(k) }

// Walk keeps the table's batch reads (controller.WalkTable): the reconcilers' periodic passes
// walk the maps rather than list them into maps.
func (t trackedTable[K, V]) Walk(fn func(K, V)) error { return controller.WalkTable(t.table, fn) }

// trackedBackends keeps the backend table's batch writes (BackendSetWriter); trackedTable keeps its
// batch reads (BackendWalker).
type trackedBackends struct {
	trackedTable[controller.BackendSlot, service.Backend]
}

func (t trackedBackends) UpsertSet(id uint32, backends []service.Backend) error {
	t.dirty.Store(true)
	if w, ok := t.table.(controller.BackendSetWriter); ok {
		return w.UpsertSet(id, backends)
	}
	var errs []error
	for i, b := range backends {
		errs = append(errs, t.table.Upsert(controller.BackendSlot{ID: id, Slot: uint32(i)}, b))
	}
	return errors.Join(errs...)
}

// trackForSnapshot returns t, wrapped to keep the snapshot when it is enabled.
func (a *Agent) trackForSnapshot(t mapTables) mapTables {
	if a.cfg.SnapshotDir == "" {
		return t
	}
	a.snapshots = &snapshotKeeper{dir: a.cfg.SnapshotDir, maxBytes: snapshot.DefaultMaxBytes, node: snapshot.Node{
		Name: a.cfg.NodeName, NodeIP: a.underlay.IP, PodCIDR: a.podCIDR, VTEPMAC: a.device.MAC.String(), ClusterCIDR: a.cfg.ClusterCIDR}}
	return a.snapshots.track(t)
}

// startFromSnapshot programs the maps from s, lets the CNI plugin re-create pods, and repairs
// the backends of those that come back under new addresses until the API server answers; it
// returns this node's Node then.
func (a *Agent) startFromSnapshot(ctx context.Context, t mapTables, s *snapshot.State) (*k8s.Node, error) {
	logger := klog.FromContext(ctx)
	pods, err := localPods(a.cfg.RunDir, t.Endpoints())
	if err != nil {
		logger.Error(err, "Reading the name index for re-created pods")
	}
	if err := restoreMaps(t, s, pods); err != nil {
		logger.Error(err, "Programming the maps from the snapshot; what was written stays")
	}
	if err := a.publishNodeConfig(); err != nil { // the CNI plugin may re-create pods from here on
		return nil, err
	}
	logger.Info("Datapath programmed from the snapshot; waiting for the API server", "written", s.Written)
	var repairedPods atomic.Int64
	a.ready.addNote(func() string {
		if a.ready.synced.Load() {
			return "snapshot: this agent started from the snapshot written " + s.Written + " (no pins, API server unreachable); the API server's state has replaced it"
		}
		return fmt.Sprintf("snapshot: datapath programmed from the snapshot written %s (no pins, API server unreachable); Service backends of %d re-created pod(s) repaired from the name index",
			s.Written, repairedPods.Load())
	})
	repairCtx, stopRepair := context.WithCancel(ctx)
	var repairing sync.WaitGroup
	repairing.Go(func() { repairBackends(repairCtx, t, s, a.cfg.RunDir, func() { repairedPods.Add(1) }) })
	defer repairing.Wait() // the reconcilers own the maps from here on
	defer stopRepair()
	return a.register(ctx)
}
