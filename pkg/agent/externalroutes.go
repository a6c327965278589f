package agent

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// externalRoutes routes the node's own traffic to externalIPs and LoadBalancer ingress IPs into
// the overlay device, as the service CIDR is routed, so that overlay_egress translates it with
// their INTERNAL frontends (flag external-ip) like a ClusterIP connection: kube-proxy answers
// these addresses from the node too.
//
// It follows the frontend table the ServiceReconciler writes (routedFrontends): the addresses are
// those of the INTERNAL external-ip frontends in lb_svc_map, recomputed from the whole map on
// every List (start-up and each resync, which also restores routes lost with a recreated device)
// and kept up to date by Upsert and Delete. An address is never routed when that would take
// other traffic of the node with it: a node's address (the tunnel and the kubelets talk to
// those), the cluster and service CIDRs (routed already). Traffic to a routed address on a port
// that is no frontend leaves through the underlay NIC, masqueraded (overlay_egress), as it
// would have without the route.
type externalRoutes struct {
	device  string // the overlay device, looked up by name: it may have been recreated
	src     netip.Addr
	inside  []netip.Prefix // the cluster and service CIDRs
	nodes   corelisters.NodeLister
	logger  klog.Logger
	mu      sync.Mutex
	vips    map[service.FrontendKey]netip.Addr
	applied map[netip.Addr]bool
}

func routedVIP(k service.FrontendKey, e controller.ServiceEntry) bool {
	return k.Scope == lb.ScopeInternal && e.Flags&lb.FlagExternalIP != 0 && k.VIP.Is4()
}

// want is the set of addresses to route now.
func (r *externalRoutes) want() map[netip.Addr]bool {
	excluded := map[netip.Addr]bool{}
	if r.nodes != nil {
		nodes, err := r.nodes.List(labels.Everything())
		if err != nil {
			r.logger.Error(err, "Listing nodes for the externalIP routes")
		}
		for _, n := range nodes {
			for _, a := range nodeAddresses(n) {
				excluded[a] = true
			}
		}
	}
	want := map[netip.Addr]bool{}
	for _, a := range r.vips {
		if excluded[a] || r.insideCluster(a) {
			continue
		}
		want[a] = true
	}
	return want
}

func (r *externalRoutes) insideCluster(a netip.Addr) bool {
	for _, p := range r.inside {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// nodeAddresses are the addresses a node is reached at: its status addresses and Flannel's
// public-ip annotations (what edgeplane itself tunnels to).
func nodeAddresses(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	for _, k := range []string{"flannel.alpha.coreos.com/public-ip", "flannel.alpha.coreos.com/public-ip-overwrite"} {
		if ip, err := netip.ParseAddr(n.Annotations[k]); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// sync applies want when it changed (or always, with force). Called with r.mu held. Errors are
// logged, not returned: the frontend itself is written, and the next resync tries again.
func (r *externalRoutes) syncLocked(force bool) {
	want := r.want()
	if !force && equalSets(want, r.applied) {
		return
	}
	link, err := netlink.LinkByName(r.device)
	if err == nil {
		err = netdev.SyncServiceRoutes(link.Attrs().Index, r.src, want)
	} else {
		err = fmt.Errorf("looking up %s: %w", r.device, err)
	}
	if err != nil {
		r.logger.Error(err, "Routing externalIPs and LoadBalancer IPs into the overlay device; retried at the next resync")
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

// routedFrontends is the ServiceReconciler's frontend table with externalRoutes following it.
type routedFrontends struct {
	controller.FrontendTable
	routes *externalRoutes
}

func (t routedFrontends) Upsert(k service.FrontendKey, e controller.ServiceEntry) error {
	if err := t.FrontendTable.Upsert(k, e); err != nil {
		return err
	}
	r := t.routes
	r.mu.Lock()
	defer r.mu.Unlock()
	if routedVIP(k, e) {
		r.vips[k] = k.VIP
	} else {
		delete(r.vips, k)
	}
	r.syncLocked(false)
	return nil
}

func (t routedFrontends) Delete(k service.FrontendKey) error {
	if err := t.FrontendTable.Delete(k); err != nil {
		return err
	}
	r := t.routes
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.vips[k]; ok {
		delete(r.vips, k)
		r.syncLocked(false)
	}
	return nil
}

func (t routedFrontends) List() (map[service.FrontendKey]controller.ServiceEntry, error) {
	have, err := t.FrontendTable.List()
	if err != nil {
		return have, err
	}
	r := t.routes
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vips = map[service.FrontendKey]netip.Addr{}
	for k, e := range have {
		if routedVIP(k, e) {
			r.vips[k] = k.VIP
		}
	}
	r.syncLocked(true)
	return have, nil
}

// routedFrontends wraps the frontend table with the node's routes to externalIPs and
// LoadBalancer IPs.
func (a *Agent) routedFrontends(t controller.FrontendTable, inf *k8s.Informers) routedFrontends {
	return routedFrontends{FrontendTable: t, routes: &externalRoutes{
		device: a.cfg.VXLANDevice,
		src:    a.podCIDR.Addr(),
		inside: []netip.Prefix{a.cfg.ClusterCIDR, a.cfg.ServiceCIDR},
		nodes:  corelisters.NewNodeLister(inf.Nodes().GetIndexer()),
		logger: klog.Background().WithName("externalip-routes"),
		vips:   map[service.FrontendKey]netip.Addr{},
	}}
}
