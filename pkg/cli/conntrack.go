package cli

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

// hairpinIP is LB_HAIRPIN_IP (bpf/lib/lb_xlate.h): the source a pod that reached itself through
// a service sees, and the client address of its REV entry.
var hairpinIP = maps.IPv4{169, 254, 42, 1}

// conntrackInfo is lb_ct_map as edgeplanectl conntrack shows it (JSON schema in docs/cli.md).
type conntrackInfo struct {
	Connections []connInfo     `json:"connections"`
	Summary     conntrackTotal `json:"summary"`
}

// conntrackTotal counts what is shown, and what the map holds.
type conntrackTotal struct {
	Connections int `json:"connections"` // rows shown
	Expired     int `json:"expired"`     // of them, dead for the datapath but not swept yet
	Entries     int `json:"entries"`     // lb_ct_map entries, whatever the filters
	MaxEntries  int `json:"maxEntries"`
}

// connInfo is one service connection: its FWD and REV entries joined where both exist.
type connInfo struct {
	Proto        string `json:"proto"` // "tcp" | "udp" | "sctp" | "proto(<n>)"
	ClientIP     string `json:"clientIP"`
	ClientPort   uint16 `json:"clientPort"`
	FrontendIP   string `json:"frontendIP"` // the address the client sent to (a node port: the node's)
	FrontendPort uint16 `json:"frontendPort"`
	BackendIP    string `json:"backendIP"`
	BackendPort  uint16 `json:"backendPort"`
	// The Service, from the name index; "" when unknown.
	ServiceNamespace string `json:"serviceNamespace"`
	ServiceName      string `json:"serviceName"`
	SvcID            uint32 `json:"svcID"` // the backend set the backend was picked from
	// State: TCP "syn" (the backend has not answered), "established" or "closing" (FIN or RST
	// seen); other protocols "unreplied" or "replied".
	State   string   `json:"state"`
	Flags   []string `json:"flags"` // "seen-reply", "closing", "hairpin"; unknown bits "0x.."
	Hairpin bool     `json:"hairpin"`
	// Entries: "both", "fwd-only" (the REV entry is gone: replies are not translated back) or
	// "rev-only" (the FWD entry is gone: the next packet picks a backend again).
	Entries        string `json:"entries"`
	AgeSeconds     uint64 `json:"ageSeconds"`     // since the last packet (the newer entry's last_seen)
	TimeoutSeconds uint64 `json:"timeoutSeconds"` // what applies to proto and flags (lb.h)
	Expired        bool   `json:"expired"`        // age > timeout: dead, the garbage collector has not deleted it yet

	proto                     lb.Proto
	client, frontend, backend netip.AddrPort
}

func newConntrackCommand(e *env) *cobra.Command {
	var filter ipFilter
	var port uint16
	cmd := &cobra.Command{
		Use:     "conntrack",
		Aliases: []string{"ct"},
		Short:   "List service connections (lb_ct_map): client -> frontend -> backend, state, age",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			ct, err := e.listConntrack(&filter, port)
			if err != nil {
				return err
			}
			return e.print(ct, func(w io.Writer) { conntrackTable(w, ct) })
		},
	}
	cmd.Flags().Var(&filter, "ip", ipFlagUsage+" (client, frontend or backend address)")
	cmd.Flags().Uint16Var(&port, "port", 0, "only connections with this client, frontend or backend port")
	return cmd
}

func conntrackTable(w io.Writer, ct conntrackInfo) {
	row(w, "PROTO", "CLIENT", "FRONTEND", "BACKEND", "SERVICE", "STATE", "AGE", "TIMEOUT", "FLAGS")
	for _, c := range ct.Connections {
		var flags []string
		if c.Hairpin {
			flags = append(flags, "hairpin")
		}
		if c.Entries != "both" {
			flags = append(flags, c.Entries)
		}
		if c.Expired {
			flags = append(flags, "expired")
		}
		service := ""
		if c.ServiceName != "" {
			service = c.ServiceNamespace + "/" + c.ServiceName
		}
		row(w, c.Proto, c.client, c.frontend, c.backend, orDash(service), c.State,
			seconds(c.AgeSeconds), seconds(c.TimeoutSeconds), orDash(strings.Join(flags, ",")))
	}
	s := ct.Summary
	noun := "connections"
	if s.Connections == 1 {
		noun = "connection"
	}
	fmt.Fprintf(w, "\n%d %s (%d expired, not swept yet); lb_ct_map holds %d of %d entries\n",
		s.Connections, noun, s.Expired, s.Entries, s.MaxEntries)
}

// seconds spells a duration compactly: 45s, 2m5s, 6h, 1h0m3s.
func seconds(s uint64) string {
	h, m, sec := s/3600, s/60%60, s%60
	switch {
	case h > 0 && m == 0 && sec == 0:
		return fmt.Sprintf("%dh", h)
	case h > 0:
		return fmt.Sprintf("%dh%dm%ds", h, m, sec)
	case m > 0 && sec == 0:
		return fmt.Sprintf("%dm", m)
	case m > 0:
		return fmt.Sprintf("%dm%ds", m, sec)
	}
	return fmt.Sprintf("%ds", sec)
}

// bootTime reads CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns.
func (e *env) bootTime() (uint64, error) {
	if e.opts.BootTime != nil {
		return e.opts.BootTime()
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
	}
	return uint64(ts.Nano()), nil
}

func (e *env) listConntrack(filter *ipFilter, port uint16) (conntrackInfo, error) {
	out := conntrackInfo{Connections: []connInfo{}, Summary: conntrackTotal{MaxEntries: lb.CTMax}}
	ctMap, err := open(e, lb.CTMapName, lb.OpenCTReadOnly)
	if err != nil {
		return out, err
	}
	defer ctMap.Close()
	entries, err := ctMap.List()
	if err != nil {
		return out, fmt.Errorf("reading %s: %w", lb.CTMapName, err)
	}
	now, err := e.bootTime()
	if err != nil {
		return out, err
	}
	// The TCP close timeouts the programs use: the agent's flags, written into node_cfg_map.
	var timeouts lb.CTCloseTimeouts
	if cfg, err := e.readNodeCfg(); err == nil {
		timeouts = cfg.CTCloseTimeouts()
	}
	out.Summary.Entries = len(entries)

	claimed := map[lb.CTKey]bool{}
	for k, v := range entries {
		if k.Dir != lb.DirFwd {
			continue
		}
		c := conn{proto: k.Proto, client: k.Saddr, clientPort: k.Sport, frontend: k.Daddr, frontendPort: k.Dport,
			backend: v.Addr, backendPort: v.Port, svcID: v.SvcID, flags: v.Flags, lastSeen: v.LastSeen, entries: "fwd-only"}
		if rk, rv, ok := revOf(entries, k, v); ok {
			claimed[rk] = true
			c.entries, c.flags, c.lastSeen = "both", c.flags|rv.Flags, max(c.lastSeen, rv.LastSeen)
		}
		out.Connections = append(out.Connections, e.describeConn(c, now, timeouts))
	}
	for k, v := range entries {
		if k.Dir != lb.DirRev || claimed[k] {
			continue
		}
		client := k.Daddr
		if v.Flags&lb.CTFlagHairpin != 0 {
			client = k.Saddr
		}
		c := conn{proto: k.Proto, client: client, clientPort: k.Dport, frontend: v.Addr, frontendPort: v.Port,
			backend: k.Saddr, backendPort: k.Sport, svcID: v.SvcID, flags: v.Flags, lastSeen: v.LastSeen, entries: "rev-only"}
		out.Connections = append(out.Connections, e.describeConn(c, now, timeouts))
	}

	out.Connections = slices.DeleteFunc(out.Connections, func(c connInfo) bool {
		ipOK := filter.addr(c.client.Addr()) || filter.addr(c.frontend.Addr()) || filter.addr(c.backend.Addr())
		portOK := port == 0 || c.client.Port() == port || c.frontend.Port() == port || c.backend.Port() == port
		return !ipOK || !portOK
	})
	slices.SortFunc(out.Connections, func(a, b connInfo) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), a.client.Compare(b.client), a.frontend.Compare(b.frontend),
			a.backend.Compare(b.backend), cmp.Compare(a.Entries, b.Entries))
	})
	if len(out.Connections) > 0 {
		e.nameConnections(out.Connections)
	}
	out.Summary.Connections = len(out.Connections)
	for _, c := range out.Connections {
		if c.Expired {
			out.Summary.Expired++
		}
	}
	return out, nil
}

// revOf finds the REV entry of the FWD entry (k, v): keyed as lb_xlate_fwd writes it, and
// naming the same frontend.
func revOf(entries map[lb.CTKey]lb.CT, k lb.CTKey, v lb.CT) (lb.CTKey, lb.CT, bool) {
	client := k.Saddr
	if v.Flags&lb.CTFlagHairpin != 0 {
		client = hairpinIP
	}
	rk := lb.CTKey{Saddr: v.Addr, Daddr: client, Sport: v.Port, Dport: k.Sport, Proto: k.Proto, Dir: lb.DirRev}
	rv, ok := entries[rk]
	if !ok || rv.Addr != k.Daddr || rv.Port != k.Dport {
		return rk, rv, false
	}
	return rk, rv, true
}

// conn is one connection in the maps' terms, before it is described.
type conn struct {
	proto                                 lb.Proto
	client, frontend, backend             maps.IPv4
	clientPort, frontendPort, backendPort lb.Port
	svcID                                 uint32
	flags                                 uint16
	lastSeen                              uint64
	entries                               string
}

func (e *env) describeConn(c conn, now uint64, timeouts lb.CTCloseTimeouts) connInfo {
	info := connInfo{
		Proto: c.proto.String(), ClientIP: c.client.String(), ClientPort: c.clientPort.Uint16(),
		FrontendIP: c.frontend.String(), FrontendPort: c.frontendPort.Uint16(),
		BackendIP: c.backend.String(), BackendPort: c.backendPort.Uint16(),
		SvcID: c.svcID, State: connState(c.proto, c.flags), Flags: ctFlags(c.flags),
		Hairpin: c.flags&lb.CTFlagHairpin != 0, Entries: c.entries,
		TimeoutSeconds: uint64(timeouts.Timeout(c.proto, c.flags).Seconds()),
		Expired:        timeouts.Expired(lb.CT{LastSeen: c.lastSeen, Flags: c.flags}, c.proto, now),
		proto:          c.proto,
		client:         netip.AddrPortFrom(c.client.Addr(), c.clientPort.Uint16()),
		frontend:       netip.AddrPortFrom(c.frontend.Addr(), c.frontendPort.Uint16()),
		backend:        netip.AddrPortFrom(c.backend.Addr(), c.backendPort.Uint16()),
	}
	if now > c.lastSeen { // another CPU may have stamped a little after now was read
		info.AgeSeconds = (now - c.lastSeen) / 1e9
	}
	return info
}

// nameConnections names each connection's Service: by the frontend its backend set belongs to
// (a node port's connection is addressed to a node address, not the 0.0.0.0 frontend), else by
// the address the client sent to. Without lb_svc_map only the latter.
func (e *env) nameConnections(conns []connInfo) {
	byID := map[uint32]lb.SvcKey{}
	if svcMap, err := lb.OpenSvcReadOnly(e.root); err == nil {
		defer svcMap.Close()
		_ = svcMap.Iterate(func(k lb.SvcKey, v lb.Svc) bool {
			if old, dup := byID[v.ID]; !dup || compareSvcKeys(k, old) < 0 {
				byID[v.ID] = k
			}
			return true
		})
	}
	index := e.services()
	for i := range conns {
		c := &conns[i]
		name := ""
		if k, ok := byID[c.SvcID]; ok {
			name = index.service(k)
		}
		for _, scope := range []lb.Scope{lb.ScopeInternal, lb.ScopeExternal} {
			if name != "" {
				break
			}
			name = index.service(lb.SvcKey{VIP: maps.IPv4(c.frontend.Addr().As4()), Port: lb.PortFrom(c.frontend.Port()),
				Proto: c.proto, Scope: scope})
		}
		c.ServiceNamespace, c.ServiceName, _ = strings.Cut(name, "/")
	}
}

func connState(proto lb.Proto, flags uint16) string {
	switch {
	case proto != lb.ProtoTCP && flags&lb.CTFlagSeenReply != 0:
		return "replied"
	case proto != lb.ProtoTCP:
		return "unreplied"
	case flags&lb.CTFlagRST != 0:
		return "reset"
	case flags&(lb.CTFlagFinFwd|lb.CTFlagFinRev) == lb.CTFlagFinFwd:
		return "client-closed" // half-closed: the backend may still send
	case flags&(lb.CTFlagFinFwd|lb.CTFlagFinRev) == lb.CTFlagFinRev:
		return "backend-closed" // half-closed: the client may still send
	case flags&lb.CTFlagClosing != 0:
		return "closing" // FINs both ways, or an older agent's FIN or RST
	case flags&lb.CTFlagSeenReply != 0:
		return "established"
	}
	return "syn"
}

// ctFlagNames name lb.h's enum lb_ct_flags (and lb_ct.h's LB_CT_EXTERNAL), lowest bit first.
var ctFlagNames = []string{"seen-reply", "closing", "hairpin", "external", "fin-fwd", "fin-rev", "rst"}

// ctFlags names the connection tracking flags, lowest bit first.
func ctFlags(f uint16) []string {
	out := []string{}
	for i, name := range ctFlagNames {
		if f&(1<<i) != 0 {
			out = append(out, name)
		}
	}
	if rest := f &^ (1<<len(ctFlagNames) - 1); rest != 0 {
		out = append(out, fmt.Sprintf("%#x", rest))
	}
	return out
}
