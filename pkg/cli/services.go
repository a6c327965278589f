package cli

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// serviceInfo is one lb_svc_map frontend with its backend set (JSON schema in docs/cli.md).
type serviceInfo struct {
	IP    string `json:"ip"` // the VIP; "0.0.0.0" for a node port (any node address)
	Port  uint16 `json:"port"`
	Proto string `json:"proto"` // "tcp" | "udp" | "sctp" | "proto(<n>)"
	Scope string `json:"scope"` // "internal" | "external" | "scope(<n>)"
	// Type is what the flags say: "NodePort", "ExternalIP" (externalIPs and LoadBalancer ingress
	// IPs) or "ClusterIP".
	Type string `json:"type"`
	// The Service, from the name index (names/services.json); "" when unknown.
	ServiceNamespace string   `json:"serviceNamespace"`
	ServiceName      string   `json:"serviceName"`
	Flags            []string `json:"flags"`           // "affinity", "nodeport", "closed", "local", "external-ip"; unknown bits "0x.."
	AffinityTimeout  uint32   `json:"affinityTimeout"` // seconds; 0 without "affinity"
	ID               uint32   `json:"id"`              // the backend set: lb_backend_map {id, 0..backendCount-1}
	BackendCount     uint16   `json:"backendCount"`
	// Unreachable counts the backends the agent left out of this frontend because this node
	// cannot reach their node's network domain (lb_svc's unreachable; docs/services.md).
	Unreachable uint16        `json:"unreachable"`
	Backends    []backendInfo `json:"backends"` // by slot; [] when closed or without backends

	flags uint16
	addr  netip.Addr
}

// backendInfo is one slot of a backend set.
type backendInfo struct {
	Slot uint32 `json:"slot"`
	IP   string `json:"ip"` // "" when the slot is missing
	Port uint16 `json:"port"`
	// Missing: lb_backend_map has no such slot (the programs drop what picks it as
	// NO_SERVICE_BACKEND). The agent writes slots before the frontend points at them: a missing
	// one is a bug or someone else's write.
	Missing bool `json:"missing"`
	// The pod, from the name index, when the backend is a local endpoint; "" otherwise.
	PodNamespace string `json:"podNamespace"`
	PodName      string `json:"podName"`
	// NodeName is the node whose pod CIDR holds the backend, or whose address it is (a host
	// network endpoint), from the name index; "" when unknown.
	NodeName string `json:"nodeName"`
}

func (s *serviceInfo) frontend() string {
	if s.flags&lb.FlagNodePort != 0 && s.addr.IsUnspecified() {
		return fmt.Sprintf("*:%d/%s", s.Port, s.Proto)
	}
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(s.addr, s.Port), s.Proto)
}

func (s *serviceInfo) service() string {
	if s.ServiceName == "" {
		return ""
	}
	return s.ServiceNamespace + "/" + s.ServiceName
}

// flagCell shows the flags as words, the affinity with its timeout: "affinity(10800s),local".
func (s *serviceInfo) flagCell() string {
	cells := slices.Clone(s.Flags)
	for i, f := range cells {
		if f == "affinity" {
			cells[i] = fmt.Sprintf("affinity(%ds)", s.AffinityTimeout)
		}
	}
	return orDash(strings.Join(cells, ","))
}

// backendsCell is the backend count, with those left out as unreachable: "1 (+2 unreachable)".
func (s *serviceInfo) backendsCell() string {
	if s.Unreachable == 0 {
		return fmt.Sprint(s.BackendCount)
	}
	return fmt.Sprintf("%d (+%d unreachable)", s.BackendCount, s.Unreachable)
}

func (b *backendInfo) cells() (backend, pod, node string) {
	if b.Missing {
		return fmt.Sprintf("slot %d missing", b.Slot), "-", "-"
	}
	pod = b.PodName
	if b.PodNamespace != "" {
		pod = b.PodNamespace + "/" + pod
	}
	return hostPort(b.IP, b.Port), orDash(pod), orDash(b.NodeName)
}

// serviceFilter is what services' flags keep.
type serviceFilter struct {
	service string // --service namespace/name
	ip      ipFilter
	port    uint16
	closed  bool
	scope   string
}

func newServicesCommand(e *env) *cobra.Command {
	var f serviceFilter
	cmd := &cobra.Command{
		Use:     "services",
		Aliases: []string{"service", "svc"},
		Short:   "List service frontends (lb_svc_map) with their flags and backends, named from the name index",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			if f.service != "" && strings.Count(f.service, "/") != 1 {
				return usagef("--service %q: use namespace/name", f.service)
			}
			if f.scope != "" && f.scope != lb.ScopeInternal.String() && f.scope != lb.ScopeExternal.String() {
				return usagef("--scope %q: use internal or external", f.scope)
			}
			svcs, err := e.listServices(&f)
			if err != nil {
				return err
			}
			return e.print(svcs, func(w io.Writer) { servicesTable(w, svcs) })
		},
	}
	flags := cmd.Flags()
	flags.StringVar(&f.service, "service", "", "only the frontends of this Service (namespace/name, from the name index)")
	flags.Var(&f.ip, "ip", ipFlagUsage+" (frontend or backend address)")
	flags.Uint16Var(&f.port, "port", 0, "only frontends with this port, or a backend with this port")
	flags.BoolVar(&f.closed, "closed", false, "only NodePort frontends this node does not listen on (NodePort isolation)")
	flags.StringVar(&f.scope, "scope", "", "only frontends of this scope: internal (pods, the node) or external (the underlay NIC)")
	_ = cmd.RegisterFlagCompletionFunc("scope", cobra.FixedCompletions([]string{"internal", "external"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("service", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		all, _ := nameindex.ReadServices(e.runDir)
		for _, s := range all {
			out = append(out, s.FullName())
		}
		slices.Sort(out)
		return slices.Compact(out), cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// servicesTable prints one row per backend, the frontend's columns on its first row only (as
// cilium service list does); a frontend without backends has one row.
func servicesTable(w io.Writer, svcs []serviceInfo) {
	row(w, "FRONTEND", "TYPE", "SCOPE", "SERVICE", "FLAGS", "BACKENDS", "BACKEND", "POD", "NODE")
	for _, s := range svcs {
		head := []any{s.frontend(), s.Type, s.Scope, orDash(s.service()), s.flagCell(), s.backendsCell()}
		if len(s.Backends) == 0 {
			row(w, append(head, "-", "-", "-")...)
			continue
		}
		for i, b := range s.Backends {
			if i > 0 {
				head = []any{"", "", "", "", "", ""}
			}
			backend, pod, node := b.cells()
			row(w, append(head, backend, pod, node)...)
		}
	}
}

func (e *env) listServices(f *serviceFilter) ([]serviceInfo, error) {
	svcMap, err := open(e, lb.SvcMapName, lb.OpenSvcReadOnly)
	if err != nil {
		return nil, err
	}
	defer svcMap.Close()
	backendMap, err := open(e, lb.BackendMapName, lb.OpenBackendReadOnly)
	if err != nil {
		return nil, err
	}
	defer backendMap.Close()
	eps, err := open(e, endpoints.MapName, endpoints.Open)
	if err != nil {
		return nil, err
	}
	defer eps.Close()

	frontends, err := svcMap.List()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", lb.SvcMapName, err)
	}
	// One walk of the backends rather than a lookup per slot; a set the agent replaces meanwhile
	// may show old and new slots mixed, as any read of two maps not taken at one instant.
	backends, err := backendMap.List()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", lb.BackendMapName, err)
	}
	local := map[netip.Addr]endpoints.Endpoint{}
	if err := eps.Iterate(func(ip netip.Addr, ep endpoints.Endpoint) bool { local[ip] = ep; return true }); err != nil {
		return nil, fmt.Errorf("reading %s: %w", endpoints.MapName, err)
	}

	keys := slices.SortedFunc(func(yield func(lb.SvcKey) bool) {
		for k := range frontends {
			if !yield(k) {
				return
			}
		}
	}, compareSvcKeys)
	out := []serviceInfo{}
	for _, k := range keys {
		v := frontends[k]
		if (f.closed && v.Flags&lb.FlagClosed == 0) || (f.scope != "" && k.Scope.String() != f.scope) {
			continue
		}
		service := e.services().service(k)
		if f.service != "" && service != f.service {
			continue
		}
		info := e.describeService(k, v, service, backends, local)
		if !f.matchAddrPort(&info) {
			continue
		}
		out = append(out, info)
	}
	return out, nil
}

// matchAddrPort: --ip and --port match the frontend or any of its backends.
func (f *serviceFilter) matchAddrPort(s *serviceInfo) bool {
	ipOK := f.ip.addr(s.addr) || slices.ContainsFunc(s.Backends, func(b backendInfo) bool {
		return !b.Missing && f.ip.addr(netip.MustParseAddr(b.IP))
	})
	portOK := f.port == 0 || s.Port == f.port || slices.ContainsFunc(s.Backends, func(b backendInfo) bool {
		return !b.Missing && b.Port == f.port
	})
	return ipOK && portOK
}

func compareSvcKeys(a, b lb.SvcKey) int {
	return cmp.Or(a.VIP.Addr().Compare(b.VIP.Addr()), cmp.Compare(a.Port.Uint16(), b.Port.Uint16()),
		cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Scope, b.Scope))
}

func (e *env) describeService(k lb.SvcKey, v lb.Svc, service string, backends map[lb.BackendKey]lb.Backend, local map[netip.Addr]endpoints.Endpoint) serviceInfo {
	info := serviceInfo{
		IP: k.VIP.String(), Port: k.Port.Uint16(), Proto: k.Proto.String(), Scope: k.Scope.String(),
		Type: serviceType(v.Flags), Flags: svcFlags(v.Flags), ID: v.ID, BackendCount: v.Count, Unreachable: v.Unreachable,
		Backends: []backendInfo{}, flags: v.Flags, addr: k.VIP.Addr(),
	}
	if v.Flags&lb.FlagAffinity != 0 {
		info.AffinityTimeout = v.AffinityTimeout
	}
	if service != "" {
		info.ServiceNamespace, info.ServiceName, _ = strings.Cut(service, "/")
	}
	for slot := range uint32(v.Count) {
		b, ok := backends[lb.BackendKey{SvcID: v.ID, Slot: slot}]
		if !ok {
			info.Backends = append(info.Backends, backendInfo{Slot: slot, Missing: true})
			continue
		}
		info.Backends = append(info.Backends, e.describeBackend(slot, b, local))
	}
	return info
}

func (e *env) describeBackend(slot uint32, b lb.Backend, local map[netip.Addr]endpoints.Endpoint) backendInfo {
	ip := b.IP.Addr()
	info := backendInfo{Slot: slot, IP: ip.String(), Port: b.Port.Uint16()}
	if ep, ok := local[ip]; ok {
		if p, ok := e.pods().pod(ip, e.ifNames.name(ep.Ifindex)); ok {
			info.PodNamespace, info.PodName = p.Namespace, p.Name
		}
	}
	nodes := e.nodes()
	if n, ok := nodes.podNode(ip); ok {
		info.NodeName = n.Name
	} else {
		info.NodeName, _ = nodeCells(nodes.ipNodes(ip))
	}
	return info
}

func serviceType(flags uint16) string {
	switch {
	case flags&lb.FlagNodePort != 0:
		return "NodePort"
	case flags&lb.FlagExternalIP != 0:
		return "ExternalIP"
	}
	return "ClusterIP"
}

// svcFlags names the frontend flags, lowest bit first; unknown bits as one "0x..".
func svcFlags(f uint16) []string {
	s := lb.FlagString(f)
	if s == "-" {
		return []string{}
	}
	return strings.Split(s, ",")
}
