package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/controller"
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
type walker[K comparable, V any] interface {
	Walk(after *K, max int, fn func(K, V)) (last K, done bool, err error)
	Delete(K) error
}

// serviceView is what the collector needs from the service reconciler.
type serviceView interface {
	LiveBackends() (map[controller.BackendKey]bool, bool)
	AffinityTimeouts() map[uint32]time.Duration
}

// gcMetrics receives the collector's deletions (pkg/metrics).
type gcMetrics interface {
	ConntrackDeleted(mapName, reason string, n int)
}

// conntrackGC deletes the connection tracking and affinity entries the datapath no longer uses:
// lb_ct_map entries whose last packet (bpf_ktime_get_boot_ns) is older than the timeout lb.h
// gives their protocol and state, lb_affinity_map entries older than their Service's affinity
// timeout, and, like kube-proxy's conntrack cleanup, UDP and SCTP flows whose backend is no
// longer in any frontend (a client that keeps sending, DNS for one, would otherwise stay on a
// deleted pod). TCP flows to a removed backend are left to end by themselves (RST, timeout), as
// kube-proxy does. The LRU maps evict old entries when full; this keeps them from filling with
// the dead. Each entry is judged on its own: the programs refresh both entries of a connection.
type conntrackGC struct {
	ct       walker[lb.CTKey, lb.CT]
	affinity walker[lb.AffinityKey, lb.Affinity]
	services serviceView
	now      func() (uint64, error) // CLOCK_BOOTTIME nanoseconds
	batch    int
	metrics  gcMetrics // optional

	ctCursor       *lb.CTKey
	affinityCursor *lb.AffinityKey
	// What the last pass did in lb_ct_map (sweep).
	lastVisited, lastDeleted int
	live                     map[controller.BackendKey]bool // this sweep's backends; nil: not known
}

// bootTime is CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns.
func bootTime() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
	}
	return uint64(ts.Nano()), nil
}

// run sweeps every interval until ctx is done.
func (g *conntrackGC) run(ctx context.Context, interval time.Duration, observe func(time.Duration, error)) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		start := time.Now()
		err := g.sweep(ctx, conntrackGCBudget)
		if observe != nil {
			observe(time.Since(start), err)
		}
		if err != nil {
			klog.FromContext(ctx).Error(err, "Collecting service connection tracking entries; retrying at the next pass")
		}
	}, interval)
}

// sweep runs a pass, and more while the last one found a full batch of lb_ct_map mostly dead and
// the budget lasts.
func (g *conntrackGC) sweep(ctx context.Context, budget time.Duration) error {
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
func (g *conntrackGC) behind() bool {
	return g.lastVisited >= g.batch && g.lastDeleted*4 >= g.lastVisited
}

// pass visits at most a batch of entries of each map, from where the previous pass stopped.
func (g *conntrackGC) pass() error {
	now, err := g.now()
	if err != nil {
		return err
	}
	return errors.Join(g.passCT(now), g.passAffinity(now))
}

func (g *conntrackGC) passCT(now uint64) error {
	if g.ctCursor == nil { // a new sweep: judge its flows against today's backends
		g.live = nil
		if live, ok := g.services.LiveBackends(); ok {
			g.live = live
		}
	}
	var expired, stale []lb.CTKey
	var keep *lb.CTKey
	visited := 0
	last, done, err := g.ct.Walk(g.ctCursor, g.batch, func(k lb.CTKey, v lb.CT) {
		visited++
		switch {
		case v.Expired(k.Proto, now):
			expired = append(expired, k)
		case g.live != nil && k.Dir == lb.DirFwd && k.Proto != lb.ProtoTCP &&
			!g.live[controller.BackendKey{Backend: serviceBackend(v.Addr, v.Port), Proto: k.Proto}]:
			stale = append(stale, k)
		default:
			keep = &k
		}
	})
	g.lastVisited, g.lastDeleted = visited, len(expired)+len(stale)
	errs := []error{err}
	errs = append(errs, deleteAll(g.ct, lb.CTMapName, gcExpired, expired, g.metrics))
	errs = append(errs, deleteAll(g.ct, lb.CTMapName, gcStaleBackend, stale, g.metrics))
	g.ctCursor = nextCursor(last, keep, done, err)
	return errors.Join(errs...)
}

func (g *conntrackGC) passAffinity(now uint64) error {
	timeouts := g.services.AffinityTimeouts()
	var expired []lb.AffinityKey
	var keep *lb.AffinityKey
	last, done, err := g.affinity.Walk(g.affinityCursor, g.batch, func(k lb.AffinityKey, v lb.Affinity) {
		timeout, ok := timeouts[k.SvcID]
		if !ok {
			timeout = maxAffinityTimeout
		}
		if v.Expired(timeout, now) {
			expired = append(expired, k)
		} else {
			keep = &k
		}
	})
	errs := []error{err, deleteAll(g.affinity, lb.AffinityMapName, gcExpired, expired, g.metrics)}
	g.affinityCursor = nextCursor(last, keep, done, err)
	return errors.Join(errs...)
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

func deleteAll[K comparable, V any](m walker[K, V], mapName, reason string, keys []K, metrics gcMetrics) error {
	var errs []error
	n := 0
	for _, k := range keys {
		if err := m.Delete(k); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if metrics != nil && n > 0 {
		metrics.ConntrackDeleted(mapName, reason, n)
	}
	return errors.Join(errs...)
}
