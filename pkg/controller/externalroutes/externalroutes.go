// Package externalroutes routes the node's own traffic to externalIPs and LoadBalancer ingress
// IPs into the overlay device, as the service CIDR is routed, so that overlay_egress translates it
// with their INTERNAL frontends (flag external-ip) like a ClusterIP connection: kube-proxy answers
// these addresses from the node too.
//
// Routes follows lb_svc_map as the ServiceReconciler writes it, as its controller.FrontendHook: the
// reconciler calls it after each frontend it writes or deletes, and with the whole map at start-up
// and at each resync (which also restores routes lost with a recreated device). It is a hook of
// the reconciler rather than a reconciler of its own because the routes must follow exactly the
// frontends written, when they are written; a watcher of its own would re-read lb_svc_map or
// derive the frontends from the Services a second time. It is a package of its own, not part of
// pkg/agent/netdev, because it reads the Service model and the node lister, which the kernel access
// layer below the models must not import; it changes the routes through netdev.
//
// An address is never routed when that would take other traffic of the node with it: a node's
// address (the tunnel and the kubelets talk to those), the cluster and service CIDRs (routed
// already). Traffic to a routed address on a port that is no frontend leaves through the underlay
// NIC, masqueraded (overlay_egress), as it would have without the route.
package externalroutes

import (
	"fmt"
	"iter"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// Config says where the routes go and what they must never cover.
type Config struct {
	Device string         // the overlay device, looked up by name at each sync: it may have been recreated
	Src    netip.Addr     // the routes' source address (the node's overlay address)
	Inside []netip.Prefix // the cluster and service CIDRs
	Nodes  NodeLister     // optional: the nodes whose addresses are never routed
	Logger klog.Logger
}

// NodeLister lists the cluster's Nodes (k8s.NodeLister).
type NodeLister interface {
	List(selector labels.Selector) ([]*k8s.Node, error)
}

// Routes keeps the routes; it implements controller.FrontendHook.
type Routes struct {
	cfg     Config
	mu      sync.Mutex
	vips    map[service.FrontendKey]netip.Addr
	applied map[netip.Addr]bool
}

// New returns Routes for cfg; nothing is routed before the reconciler's first listing or write.
func New(cfg Config) *Routes {
	return &Routes{cfg: cfg, vips: map[service.FrontendKey]netip.Addr{}}
}

var _ controller.FrontendHook = (*Routes)(nil)

func routedVIP(k service.FrontendKey, e controller.ServiceEntry) bool {
	return k.Scope == service.ScopeInternal && e.Flags&service.FlagExternalIP != 0 && k.VIP.Is4()
}

// want is the set of addresses to route now. The nodes are listed only when there is an address
// to check against theirs: most clusters have no externalIP and no LoadBalancer IP, and each
// resync lists the whole map (5,000 nodes and their 10,000 addresses each minute otherwise).
func (r *Routes) want() map[netip.Addr]bool {
	want := map[netip.Addr]bool{}
	for _, a := range r.vips {
		if !r.insideCluster(a) {
			want[a] = true
		}
	}
	if len(want) == 0 || r.cfg.Nodes == nil {
		return want
	}
	nodes, err := r.cfg.Nodes.List(labels.Everything())
	if err != nil {
		r.cfg.Logger.Error(err, "Listing nodes for the externalIP routes")
	}
	for _, n := range nodes {
		for a := range nodeAddresses(n) {
			delete(want, a)
		}
	}
	return want
}

func (r *Routes) insideCluster(a netip.Addr) bool {
	for _, p := range r.cfg.Inside {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// nodeAddresses are the addresses a node is reached at: its status addresses and Flannel's
// public-ip annotations (what edgeplane itself tunnels to).
func nodeAddresses(n *k8s.Node) iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && !yield(ip.Unmap()) {
				return
			}
		}
		for _, k := range []string{"flannel.alpha.coreos.com/public-ip", "flannel.alpha.coreos.com/public-ip-overwrite"} {
			if ip, err := netip.ParseAddr(n.Annotations.Get(k)); err == nil && !yield(ip.Unmap()) {
				return
			}
		}
	}
}

// syncLocked applies want when it changed (or always, with force). Called with r.mu held. Errors are
// logged, not returned: the frontend itself is written, and the next change of the routed
// frontends or the next resync tries again.
func (r *Routes) syncLocked(force bool) {
	want := r.want()
	if !force && equalSets(want, r.applied) {
		return
	}
	link, err := netlink.LinkByName(r.cfg.Device)
	if err == nil {
		err = netdev.SyncServiceRoutes(link.Attrs().Index, r.cfg.Src, want)
	} else {
		err = fmt.Errorf("looking up %s: %w", r.cfg.Device, err)
	}
	if err != nil {
		r.cfg.Logger.Error(err, "Routing externalIPs and LoadBalancer IPs into the overlay device; retried at the next resync")
		r.applied = nil
		return
	}
	r.applied = want
}

func equalSets(a, b map[netip.Addr]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// FrontendWritten routes k's address when k is an INTERNAL external-ip frontend, or stops
// routing it for k when it no longer is one. A write that changes neither (every ClusterIP
// frontend, an external-ip one rewritten) costs nothing: the start-up pass writes every
// Service's frontends, and a sync lists every node for the addresses never routed.
func (r *Routes) FrontendWritten(k service.FrontendKey, e controller.ServiceEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, had := r.vips[k]
	routed := routedVIP(k, e)
	if routed == had {
		return
	}
	if routed {
		r.vips[k] = k.VIP
	} else {
		delete(r.vips, k)
	}
	r.syncLocked(false)
}

// FrontendDeleted stops routing k's address for k; it stays while another frontend needs it.
func (r *Routes) FrontendDeleted(k service.FrontendKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.vips[k]; ok {
		delete(r.vips, k)
		r.syncLocked(false)
	}
}

// FrontendsListed recomputes the addresses from what the map holds and applies them even when
// they did not change, restoring routes someone deleted.
func (r *Routes) FrontendsListed(all iter.Seq2[service.FrontendKey, controller.ServiceEntry]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vips = map[service.FrontendKey]netip.Addr{}
	for k, e := range all {
		if routedVIP(k, e) {
			r.vips[k] = k.VIP
		}
	}
	r.syncLocked(true)
}
