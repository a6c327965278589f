// Package conntrackgc is the agent's garbage collector of the Service connection tracking maps
// (lb_ct_map, lb_affinity_map): every few seconds it walks a bounded batch of each, from where the
// last pass stopped, and deletes the entries the datapath no longer uses (expired ones, and UDP or
// SCTP flows to a backend no frontend uses, which it asks the ServiceReconciler about). It reads
// the maps' own types (pkg/maps/lb) and names backends as the reconciler does through
// pkg/controller/maptables' conversion; pkg/agent builds it (New) and runs it (Run) once the
// reconciler's start-up pass is over.
package conntrackgc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/controller/maptables"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

// What the conntrack garbage collector deletes, by reason (the metric's reason label).
const (
	gcExpired      = "expired"       // last packet older than the entry's timeout (lb.h)
	gcStaleBackend = "stale_backend" // UDP/SCTP flow to a backend no frontend uses any more
)

const (
	// conntrackGCInterval and conntrackGCBatch bound the work: at most a batch of entries per map
	// every interval, so a full 256k-entry lb_ct_map is swept in under a minute and a half.
	conntrackGCInterval = 5 * time.Second
	conntrackGCBatch    = 16384
	// conntrackGCBudget bounds an interval's catch-up: while a pass finds its batch mostly dead
	// (a quarter or more deleted), the next one follows at once, for up to this long. Connection
	// churn (thousands of short connections a second through a Service, each leaving two entries
	// for the closing timeout) fills the map faster than one batch per interval sweeps it; a full
	// map makes the kernel's LRU evict entries of live connections, which then break (seen in
	// BenchmarkServices' connect-rate runs at ~6,000 connections/s).
	conntrackGCBudget = 2 * time.Second
	// maxAffinityTimeout is the timeout of affinity entries whose set the reconciler does not know
	// (yet): the longest Kubernetes allows (sessionAffinityConfig.clientIP.timeoutSeconds).
	maxAffinityTimeout = 86400 * time.Second
)

// walker is a map the collector sweeps in bounded passes (pkg/maps/lb).
type Walker[K comparable, V any] interface {
	Walk(after *K, max int, fn func(K, V)) (last K, done bool, err error)
	// Lookup reads an entry again before its deletion; a missing one wraps ebpf.ErrKeyNotExist.
	Lookup(K) (V, error)
	Delete(K) error
}

// Services is what the collector needs from the service reconciler.
type Services interface {
	UnusedBackends(candidates map[controller.BackendKey]bool) (unused map[controller.BackendKey]bool, ok bool)
	AffinityTimeouts() map[uint32]time.Duration
}

// Metrics receives the collector's deletions (pkg/metrics).
type Metrics interface {
	ConntrackDeleted(mapName, reason string, n int)
}

// Collector deletes the connection tracking and affinity entries the datapath no longer uses:
// lb_ct_map entries whose last packet (bpf_ktime_get_boot_ns) is older than the timeout lb.h
// gives their protocol and state (with the TCP close timeouts the agent wrote into node_cfg_map,
// the same the programs use), lb_affinity_map entries older than their Service's affinity
// timeout, and, like kube-proxy's conntrack cleanup, UDP and SCTP flows whose backend is no
// longer in any frontend (a client that keeps sending, DNS for one, would otherwise stay on a
// deleted pod). TCP flows to a removed backend are left to end by themselves (RST, timeout), as
// kube-proxy does. The LRU maps evict old entries when full; this keeps them from filling with
// the dead. Each entry is judged on its own: the programs refresh both entries of a connection.
//
// A pass asks the reconciler only about the backends of its batch's live UDP and SCTP forward
// entries, and only when there are some: most flows are TCP, and a copy of every programmed
// backend (100,000 at 10,000 Services) would be the largest thing the collector holds. The
// programs keep writing while a pass walks its batch, so every entry judged dead is read again
// just before its deletion (deleteDead).
type Collector struct {
	ct       Walker[lb.CTKey, lb.CT]
	affinity Walker[lb.AffinityKey, lb.Affinity]
	services Services
	timeouts lb.CTCloseTimeouts     // the --ct-tcp-*-timeout flags, as written into node_cfg_map
	now      func() (uint64, error) // CLOCK_BOOTTIME nanoseconds
	batch    int
	metrics  Metrics // optional

	ctCursor       *lb.CTKey
	affinityCursor *lb.AffinityKey
	// What the last pass did in lb_ct_map (sweep).
	lastVisited, lastDeleted int
}

// Config is what a Collector sweeps, whom it asks, and where its deletions are counted.
type Config struct {
	CT       Walker[lb.CTKey, lb.CT]             // lb_ct_map
	Affinity Walker[lb.AffinityKey, lb.Affinity] // lb_affinity_map
	Services Services                            // the ServiceReconciler
	Timeouts lb.CTCloseTimeouts                  // the --ct-tcp-*-timeout flags, as written into node_cfg_map
	Metrics  Metrics                             // optional
}

// New returns a collector of cfg's maps on CLOCK_BOOTTIME, a batch of conntrackGCBatch entries
// per map and pass.
func New(cfg Config) *Collector {
	return &Collector{
		ct: cfg.CT, affinity: cfg.Affinity, services: cfg.Services, timeouts: cfg.Timeouts,
		now: bootTime, batch: conntrackGCBatch, metrics: cfg.Metrics,
	}
}

// bootTime is CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns.
func bootTime() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
	}
	return uint64(ts.Nano()), nil
}

// Run sweeps every conntrackGCInterval until ctx is done; observe, when set, is told how long
// each sweep took and how it ended.
func (g *Collector) Run(ctx context.Context, observe func(time.Duration, error)) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		start := time.Now()
		err := g.sweep(ctx, conntrackGCBudget)
		if observe != nil {
			observe(time.Since(start), err)
		}
		if err != nil {
			klog.FromContext(ctx).Error(err, "Collecting service connection tracking entries; retrying at the next pass")
		}
	}, conntrackGCInterval)
}

// sweep runs a pass, and more while the last one found a full batch of lb_ct_map mostly dead and
// the budget lasts.
func (g *Collector) sweep(ctx context.Context, budget time.Duration) error {
	start := time.Now()
	for {
		if err := g.pass(); err != nil {
			return err
		}
		if !g.behind() || time.Since(start) >= budget || ctx.Err() != nil {
			return nil
		}
	}
}

// behind: the last pass visited a whole batch of lb_ct_map and deleted a quarter of it or more.
func (g *Collector) behind() bool {
	return g.lastVisited >= g.batch && g.lastDeleted*4 >= g.lastVisited
}

// pass visits at most a batch of entries of each map, from where the previous pass stopped.
func (g *Collector) pass() error {
	now, err := g.now()
	if err != nil {
		return err
	}
	return errors.Join(g.passCT(now), g.passAffinity(now))
}

func (g *Collector) passCT(now uint64) error {
	var expired, candidates []seen[lb.CTKey, lb.CT]
	var keep kept[lb.CTKey]
	visited := 0
	last, done, err := g.ct.Walk(g.ctCursor, g.batch, func(k lb.CTKey, v lb.CT) {
		e := seen[lb.CTKey, lb.CT]{key: k, value: v, at: visited}
		visited++
		switch {
		case g.timeouts.Expired(v, k.Proto, now):
			expired = append(expired, e)
		case k.Dir == lb.DirFwd && k.Proto != lb.ProtoTCP:
			candidates = append(candidates, e)
		default:
			keep.add(k, e.at)
		}
	})
	stale, unused := g.staleBackends(candidates, &keep)
	// An expired entry is dead while its last packet is the one it was judged by: a later one
	// (or a new connection under the same key) makes it live. A stale one is dead while it still
	// goes to a backend no frontend uses, however recent its last packet: a client that keeps
	// sending is what the stale deletion is for.
	nExpired, errExpired := deleteDead(g.ct, lb.CTMapName, gcExpired, expired, &keep, g.metrics,
		func(k lb.CTKey, judged, fresh lb.CT) bool {
			return fresh.LastSeen == judged.LastSeen && g.timeouts.Expired(fresh, k.Proto, now)
		})
	nStale, errStale := deleteDead(g.ct, lb.CTMapName, gcStaleBackend, stale, &keep, g.metrics,
		func(k lb.CTKey, _, fresh lb.CT) bool { return unused[maptables.ConntrackBackend(k, fresh)] })
	g.lastVisited, g.lastDeleted = visited, nExpired+nStale
	g.ctCursor = nextCursor(last, keep.last(), done, err)
	return errors.Join(err, errExpired, errStale)
}

// staleBackends splits candidates, the unexpired UDP and SCTP forward entries of a pass, into
// those going to a backend no frontend uses (stale, with the set of those backends) and the rest
// (kept). It asks the reconciler about their backends only, and only when there are some;
// nothing is stale until the reconciler's start-up pass is over.
func (g *Collector) staleBackends(candidates []seen[lb.CTKey, lb.CT], keep *kept[lb.CTKey]) (
	stale []seen[lb.CTKey, lb.CT], unused map[controller.BackendKey]bool) {
	if len(candidates) > 0 {
		backends := map[controller.BackendKey]bool{}
		for _, e := range candidates {
			backends[maptables.ConntrackBackend(e.key, e.value)] = true
		}
		if u, ok := g.services.UnusedBackends(backends); ok {
			unused = u
		}
	}
	for _, e := range candidates {
		if unused[maptables.ConntrackBackend(e.key, e.value)] {
			stale = append(stale, e)
		} else {
			keep.add(e.key, e.at)
		}
	}
	return stale, unused
}

func (g *Collector) passAffinity(now uint64) error {
	// Asked of the reconciler (a walk over every frontend) only when the batch holds an entry:
	// most clusters have no sessionAffinity flows most of the time.
	var timeouts map[uint32]time.Duration
	asked := false
	timeout := func(id uint32) time.Duration {
		if !asked {
			timeouts, asked = g.services.AffinityTimeouts(), true
		}
		if t, ok := timeouts[id]; ok {
			return t
		}
		return maxAffinityTimeout
	}
	var expired []seen[lb.AffinityKey, lb.Affinity]
	var keep kept[lb.AffinityKey]
	visited := 0
	last, done, err := g.affinity.Walk(g.affinityCursor, g.batch, func(k lb.AffinityKey, v lb.Affinity) {
		e := seen[lb.AffinityKey, lb.Affinity]{key: k, value: v, at: visited}
		visited++
		if v.Expired(timeout(k.SvcID), now) {
			expired = append(expired, e)
		} else {
			keep.add(k, e.at)
		}
	})
	// A client's new connection renews its entry, or replaces an expired one: either way the
	// entry is live again, with a later last_seen.
	_, errExpired := deleteDead(g.affinity, lb.AffinityMapName, gcExpired, expired, &keep, g.metrics,
		func(k lb.AffinityKey, judged, fresh lb.Affinity) bool {
			return fresh.LastSeen == judged.LastSeen && fresh.Expired(timeout(k.SvcID), now)
		})
	g.affinityCursor = nextCursor(last, keep.last(), done, err)
	return errors.Join(err, errExpired)
}

// seen is an entry as a pass's walk read it, and its place in the walk.
type seen[K comparable, V any] struct {
	key   K
	value V
	at    int
}

// kept is the last entry, in walk order, a pass leaves in its map: where the next one starts.
type kept[K comparable] struct {
	key K
	at  int
	ok  bool
}

func (k *kept[K]) add(key K, at int) {
	if !k.ok || at > k.at {
		*k = kept[K]{key: key, at: at, ok: true}
	}
}

// last is the entry, nil when the pass kept none.
func (k *kept[K]) last() *K {
	if !k.ok {
		return nil
	}
	return &k.key
}

// nextCursor is where the next pass starts: after the last entry this pass kept (a deleted key
// would make the kernel restart from the first); from the first key once the sweep is done,
// failed, or deleted everything it saw.
func nextCursor[K comparable](last K, keep *K, done bool, err error) *K {
	if done || err != nil || keep == nil {
		return nil
	}
	if *keep == last {
		return &last
	}
	return keep
}

// deleteDead deletes the entries a pass judged dead for reason, each only if it still is. A pass
// judges its batch from the values the walk read, and the datapath may meanwhile have refreshed
// an entry or created a new one under the same key (a new connection reusing a 5-tuple, a
// client's new connection renewing its affinity): each entry is therefore read again just before
// its deletion and deleted only while dead(key, judged, fresh) holds, which leaves a window of
// microseconds instead of a batch's. An entry gone meanwhile (evicted, or deleted by the
// datapath) is not an error; one found live is added to keep. It returns how many it deleted.
func deleteDead[K comparable, V any](m Walker[K, V], mapName, reason string, entries []seen[K, V], keep *kept[K],
	metrics Metrics, dead func(k K, judged, fresh V) bool) (int, error) {
	var errs []error
	n := 0
	for _, e := range entries {
		fresh, err := m.Lookup(e.key)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		case !dead(e.key, e.value, fresh):
			keep.add(e.key, e.at)
			continue
		}
		if err := m.Delete(e.key); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if metrics != nil && n > 0 {
		metrics.ConntrackDeleted(mapName, reason, n)
	}
	return n, errors.Join(errs...)
}
