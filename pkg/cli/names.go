package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// The maps hold addresses; the names people know (pod namespace/name, node name, pool, Service) come from
// the name index beside node.json (pkg/nameindex), which the CNI plugin and the agent keep and which
// outlives the agent as the pins do. Verbs read it on first need. It is advisory: when it is
// missing or unreadable the verbs show no names and say so once on stderr, and an entry that does
// not match the maps (another pod's veth, another node's address) is not shown.

// podIndex is names/pods as one run read it.
type podIndex struct {
	byIP map[netip.Addr]nameindex.Pod
}

// pod is the entry of the endpoint at ip on the host veth hostIf: none when the entry names
// another veth (a stale file of a pod that had the address before). A veth that does not resolve
// here (hostIf "") cannot be checked: the entry is the best guess.
func (x *podIndex) pod(ip netip.Addr, hostIf string) (nameindex.Pod, bool) {
	p, ok := x.byIP[ip]
	if !ok || (hostIf != "" && p.HostInterface != "" && p.HostInterface != hostIf) {
		return nameindex.Pod{}, false
	}
	return p, true
}

// nodeIndex is names/nodes.json as one run read it.
type nodeIndex struct {
	byCIDR map[netip.Prefix]nameindex.Node
	bits   []int // the pod CIDRs' lengths, longest first
	byIP   map[netip.Addr][]nameindex.Node
	self   string // this node's name: the index's thisNode entry, else node.json's
	pool   string // this node's pool
}

// routeNodes are the nodes behind a route: the node of that pod CIDR when the index agrees on
// its address, else the nodes of that address.
func (x *nodeIndex) routeNodes(p netip.Prefix, nodeIP netip.Addr) []nameindex.Node {
	if n, ok := x.byCIDR[p]; ok && n.NodeIP == nodeIP {
		return []nameindex.Node{n}
	}
	return x.byIP[nodeIP]
}

// podNode is the node whose pod CIDR holds ip (the longest when several do).
func (x *nodeIndex) podNode(ip netip.Addr) (nameindex.Node, bool) {
	for _, bits := range x.bits {
		if p, err := ip.Prefix(bits); err == nil {
			if n, ok := x.byCIDR[p]; ok {
				return n, true
			}
		}
	}
	return nameindex.Node{}, false
}

// ipNodes are the nodes whose tunnel endpoint is ip (more than one behind a shared NAT address).
func (x *nodeIndex) ipNodes(ip netip.Addr) []nameindex.Node { return x.byIP[ip] }

// selfNodes is this node, as far as the index or node.json know it.
func (x *nodeIndex) selfNodes() []nameindex.Node {
	if x.self == "" {
		return nil
	}
	return []nameindex.Node{{Name: x.self, Pool: x.pool, ThisNode: true}}
}

// nodeCells joins the names and pools of nodes (usually one) as the NODE and POOL columns and the
// nodeName and pool fields show them: sorted, comma-separated, "" when unknown.
func nodeCells(nodes []nameindex.Node) (name, pool string) {
	var ns, ps []string
	for _, n := range nodes {
		ns = append(ns, n.Name)
		if n.Pool != "" {
			ps = append(ps, n.Pool)
		}
	}
	slices.Sort(ns)
	slices.Sort(ps)
	return strings.Join(slices.Compact(ns), ","), strings.Join(slices.Compact(ps), ",")
}

// pods reads names/pods once per run.
func (e *env) pods() *podIndex {
	if e.podIdx != nil {
		return e.podIdx
	}
	e.podIdx = &podIndex{}
	pods, err := nameindex.ReadPods(e.runDir)
	var bad *nameindex.BadEntriesError
	switch {
	case errors.As(err, &bad):
		e.warn("pod names: %v", err)
	case errors.Is(err, fs.ErrNotExist):
		e.warn("pod names unknown: no name index at %s (the CNI plugin writes it; pods it wired before it did are unnamed; is --run-dir right?)", nameindex.PodsDir(e.runDir))
	case err != nil:
		e.warn("pod names unknown: %v", err)
	}
	e.podIdx.byIP = pods
	return e.podIdx
}

// nodes reads names/nodes.json once per run.
func (e *env) nodes() *nodeIndex {
	if e.nodeIdx != nil {
		return e.nodeIdx
	}
	x := &nodeIndex{byCIDR: map[netip.Prefix]nameindex.Node{}, byIP: map[netip.Addr][]nameindex.Node{}}
	e.nodeIdx = x
	all, err := nameindex.ReadNodes(e.runDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		e.warn("node names unknown: no name index at %s (the agent writes it; an agent older than this edgeplanectl does not; is --run-dir right?)", nameindex.NodesPath(e.runDir))
	case err != nil:
		e.warn("node names unknown: %v", err)
	}
	for _, n := range all {
		x.byCIDR[n.PodCIDR] = n
		if n.PodCIDR.IsValid() && !slices.Contains(x.bits, n.PodCIDR.Bits()) {
			x.bits = append(x.bits, n.PodCIDR.Bits())
		}
		x.byIP[n.NodeIP] = append(x.byIP[n.NodeIP], n)
		if n.ThisNode {
			x.self, x.pool = n.Name, n.Pool
		}
	}
	slices.SortFunc(x.bits, func(a, b int) int { return b - a })
	if x.self == "" {
		if c, err := cninode.Read(e.runDir); err == nil {
			x.self = c.NodeName
		}
	}
	return x
}

// serviceIndex is names/services.json as one run read it: the Service of each frontend.
type serviceIndex struct {
	byFrontend map[nameindex.Frontend]string // "namespace/name"
}

// service names the Service of frontend k: "" when unknown.
func (x *serviceIndex) service(k lb.SvcKey) string {
	return x.byFrontend[nameindex.Frontend{IP: k.VIP.Addr(), Port: k.Port.Uint16(), Proto: k.Proto.String(), Scope: k.Scope.String()}]
}

// services reads names/services.json once per run.
func (e *env) services() *serviceIndex {
	if e.svcIdx != nil {
		return e.svcIdx
	}
	x := &serviceIndex{byFrontend: map[nameindex.Frontend]string{}}
	e.svcIdx = x
	all, err := nameindex.ReadServices(e.runDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		e.warn("service names unknown: no name index at %s (the agent writes it; an agent older than this edgeplanectl does not; is --run-dir right?)", nameindex.ServicesPath(e.runDir))
	case err != nil:
		e.warn("service names unknown: %v", err)
	}
	for _, s := range all {
		for _, f := range s.Frontends {
			if _, dup := x.byFrontend[f]; !dup { // a stale file may list a frontend twice: the first
				x.byFrontend[f] = s.FullName()
			}
		}
	}
	return x
}

// warn prints a line on stderr, once per run however often the condition is met.
func (e *env) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if e.warned[msg] {
		return
	}
	e.warned[msg] = true
	fmt.Fprintf(e.errOut, "edgeplanectl: %s\n", msg)
}

// nameFilter is --node and --pool: entries of that node, of a node in that pool ("" matches all).
type nameFilter struct{ node, pool string }

func (f *nameFilter) register(cmd *cobra.Command, e *env, what string) {
	cmd.Flags().StringVar(&f.node, "node", "", "only "+what+" of this node (a name as kubectl get nodes shows it)")
	cmd.Flags().StringVar(&f.pool, "pool", "", "only "+what+" of nodes in this node pool")
	_ = cmd.RegisterFlagCompletionFunc("node", e.completeNodeNames(func(n nameindex.Node) string { return n.Name }))
	_ = cmd.RegisterFlagCompletionFunc("pool", e.completeNodeNames(func(n nameindex.Node) string { return n.Pool }))
}

func (f *nameFilter) active() bool { return f.node != "" || f.pool != "" }

// match reports whether one of nodes (the nodes behind an entry) is the one the filter names.
func (f *nameFilter) match(nodes []nameindex.Node) bool {
	if !f.active() {
		return true
	}
	return slices.ContainsFunc(nodes, func(n nameindex.Node) bool {
		return (f.node == "" || n.Name == f.node) && (f.pool == "" || n.Pool == f.pool)
	})
}

// completeNodeNames offers the node names or pools in the index.
func (e *env) completeNodeNames(field func(nameindex.Node) string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		all, _ := nameindex.ReadNodes(e.runDir)
		for _, n := range all {
			if v := field(n); v != "" {
				out = append(out, v)
			}
		}
		slices.Sort(out)
		return slices.Compact(out), cobra.ShellCompDirectiveNoFileComp
	}
}
