package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Gateway is the route-mode site's gateway router: bird2 (BIRD 2.0) in the lab's router
// namespace, speaking BGP on its site-a legs (both segments, routesite.go) to the nodes. It
// accepts a session from any address of either segment (a dynamic BGP neighbour range, as a
// site's router listens for its nodes), imports only /24s of the cluster CIDR, exports nothing to
// the nodes, keeps a restarting node's routes (graceful restart, helper side), and installs the
// best routes into the router namespace's main table, where the forwarding between segments uses
// them. Peers added with AddPeer (the private line's router, linerouter.go) get the learned pod
// CIDRs.
//
// Its files are under <lab dir>/gateway: bird.conf, bird.log, the control socket (for birdc) and
// the pid file. The process is killed by PID when the lab closes, or by Stop.
type Gateway struct {
	// ASN is the gateway's AS; NodeASN the AS it expects the nodes to speak as (eBGP).
	ASN, NodeASN uint32
	*Bird
	password string
	peers    []BirdPeer // AddPeer's, in the order added
}

// Bird is one bird2 process in a lab namespace, with its control socket: the site gateway, the
// private line's router. Its files are under Dir.
type Bird struct {
	Dir     string
	Socket  string
	Process *Process
	netns   Netns
}

// BirdPeer is one plain eBGP neighbour of a Bird: a session named Name from Local (our address,
// AS LocalASN) to Address (AS ASN), importing and exporting what the filters (BIRD filter
// bodies, e.g. "if net ~ [ 10.244.0.0/16{24,24} ] then accept; reject;") accept.
type BirdPeer struct {
	Name           string
	Local, Address netip.Addr
	LocalASN, ASN  uint32
	Import, Export string
}

func (p BirdPeer) config() string {
	filter := func(body string) string {
		if body == "" {
			return "none"
		}
		return "filter { " + body + " }"
	}
	return fmt.Sprintf("protocol bgp %s {\n\tlocal %s as %d;\n\tneighbor %s as %d;\n\tdebug { states, events };\n\tipv4 { import %s; export %s; };\n}\n",
		p.Name, p.Local, p.LocalASN, p.Address, p.ASN, filter(p.Import), filter(p.Export))
}

// podCIDRsFilter accepts the nodes' pod CIDRs: /24s of the cluster CIDR.
var podCIDRsFilter = fmt.Sprintf("if net ~ [ %s{24,24} ] then accept; reject;", ClusterCIDR)

// startBird writes conf into dir and starts bird in ns (named name in the logs), stopped when the
// lab closes, and waits until its control socket answers.
func (l *Lab) startBird(ctx context.Context, name string, ns Netns, dir, conf string) (*Bird, error) {
	for _, bin := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("the route-mode lab needs BIRD 2 (Debian's bird2; scripts/install-deps.sh installs it): %w", err)
		}
	}
	b := &Bird{Dir: dir, Socket: filepath.Join(dir, "bird.ctl"), netns: ns}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(b.confPath(), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := startProcess("bird@"+name, ns, filepath.Join(dir, "bird.out"),
		"bird", "-f", "-c", b.confPath(), "-s", b.Socket, "-P", filepath.Join(dir, "bird.pid"))
	if err != nil {
		return nil, err
	}
	b.Process = p
	l.onClose(func() { p.Stop(5 * time.Second) })
	if err := b.waitSocket(ctx, 10*time.Second); err != nil {
		p.Kill()
		return nil, err
	}
	return b, nil
}

func (b *Bird) confPath() string { return filepath.Join(b.Dir, "bird.conf") }

// reconfigure replaces bird.conf and has bird apply it (`birdc configure`: sessions whose
// configuration is unchanged stay up; bird answers "Reconfiguration in progress" when it has
// sessions to restart first, a changed password for instance).
func (b *Bird) reconfigure(ctx context.Context, conf string) error {
	if err := os.WriteFile(b.confPath(), []byte(conf), 0o600); err != nil {
		return err
	}
	out, err := b.Birdc(ctx, "configure")
	if err != nil || !(strings.Contains(out, "Reconfigured") || strings.Contains(out, "Reconfiguration in progress")) {
		return fmt.Errorf("birdc configure: %v: %s", err, out)
	}
	return nil
}

// GatewayOptions configure StartGateway.
type GatewayOptions struct {
	ASN     uint32 // default 65000
	NodeASN uint32 // default 64512
	// Password, when set, is the TCP-MD5 password of every session (RFC 2385).
	Password string
}

// Default AS numbers of the gateway and the nodes, the ones docs/domains.md's example uses.
const (
	GatewayASN = 65000
	NodeASN    = 64512
)

// StartGateway builds site-a's second segment if need be, starts bird2 in the router namespace
// and waits until its control socket answers. bird and birdc come from PATH (Debian's bird2:
// scripts/install-deps.sh). One gateway per lab.
func (l *Lab) StartGateway(ctx context.Context, opts GatewayOptions) (*Gateway, error) {
	if err := l.checkOpen(); err != nil {
		return nil, err
	}
	if opts.ASN == 0 {
		opts.ASN = GatewayASN
	}
	if opts.NodeASN == 0 {
		opts.NodeASN = NodeASN
	}
	if err := l.EnableDomains(ctx); err != nil {
		return nil, err
	}
	if err := l.enableSegment2(ctx); err != nil {
		return nil, err
	}
	l.netMu.Lock()
	defer l.netMu.Unlock()
	if l.gateway != nil {
		return nil, errors.New("the lab's gateway is already running")
	}
	g := &Gateway{ASN: opts.ASN, NodeASN: opts.NodeASN, password: opts.Password}
	dir := filepath.Join(l.Dir, "gateway")
	b, err := l.startBird(ctx, "gateway", l.router, dir, g.config(dir))
	if err != nil {
		return nil, err
	}
	g.Bird = b
	l.gateway = g
	l.Logf("lab %s: gateway bird2 AS%d up in %s, nodes AS%d from %s and %s", l.ID, g.ASN, l.router, g.NodeASN, SiteANet, SiteASegment2Net)
	return g, nil
}

// AddPeer adds a plain eBGP neighbour to the running gateway (birdc configure: the nodes'
// sessions stay up).
func (g *Gateway) AddPeer(ctx context.Context, p BirdPeer) error {
	g.peers = append(g.peers, p)
	return g.reconfigure(ctx, g.config(g.Dir))
}

// config is bird.conf (bird's files under dir): one dynamic-neighbour BGP template per segment,
// then AddPeer's neighbours.
func (g *Gateway) config(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "log %q all;\n", filepath.Join(dir, "bird.log"))
	fmt.Fprintf(&b, "router id %s;\n", SegmentRouterIP(1))
	b.WriteString("protocol device {}\n")
	// The learned pod CIDRs go into the router's own table, nothing else is touched; on exit
	// bird removes what it installed.
	b.WriteString("protocol kernel { ipv4 { import none; export all; }; }\n")
	fmt.Fprintf(&b, "filter pod_cidrs { %s }\n", podCIDRsFilter)
	for i, seg := range []netip.Prefix{SiteANet, SiteASegment2Net} {
		fmt.Fprintf(&b, "protocol bgp segment%d {\n", i+1)
		fmt.Fprintf(&b, "\tlocal %s as %d;\n", SegmentRouterIP(i+1), g.ASN)
		fmt.Fprintf(&b, "\tneighbor range %s as %d;\n", seg, g.NodeASN)
		fmt.Fprintf(&b, "\tdynamic name \"seg%d_\";\n", i+1)
		b.WriteString("\tdebug { states, events };\n")
		b.WriteString("\tgraceful restart on;\n")
		if g.password != "" {
			fmt.Fprintf(&b, "\tpassword %q;\n", g.password)
		}
		b.WriteString("\tipv4 { import filter pod_cidrs; export none; };\n}\n")
	}
	for _, p := range g.peers {
		b.WriteString(p.config())
	}
	return b.String()
}

func (g *Bird) waitSocket(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := g.Birdc(ctx, "show", "status")
		if err == nil && strings.Contains(out, "Daemon is up and running") {
			return nil
		}
		if done, werr := g.Process.Exited(); done {
			return fmt.Errorf("bird exited (%v): %s", werr, TailFile(filepath.Join(g.Dir, "bird.out"), 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bird's control socket %s not answering after %v: %v %s", g.Socket, timeout, err, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Birdc runs `birdc -s <socket> <args>` and returns its output.
func (g *Bird) Birdc(ctx context.Context, args ...string) (string, error) {
	return g.netns.Exec(ctx, "birdc", append([]string{"-s", g.Socket}, args...)...)
}

// GatewayRoute is a route bird selected (the best one) for a prefix.
type GatewayRoute struct {
	Prefix   netip.Prefix
	NextHop  netip.Addr
	Protocol string // the BGP session's name, e.g. seg1_1
}

// Routes are the best routes of bird's table, by prefix (`birdc show route all primary`).
func (g *Bird) Routes(ctx context.Context) (map[netip.Prefix]GatewayRoute, error) {
	out, err := g.Birdc(ctx, "show", "route", "all", "primary")
	if err != nil {
		return nil, err
	}
	return parseBirdRoutes(out), nil
}

// parseBirdRoutes reads `show route all primary`: a route starts at a line whose first field is
// the prefix, its next hop is on the first "via" line under it. (BIRD 2.0.12 shows a route kept by
// graceful restart like any other: GatewaySession.GracefulRestartActive tells it.)
func parseBirdRoutes(out string) map[netip.Prefix]GatewayRoute {
	routes := map[netip.Prefix]GatewayRoute{}
	var cur *GatewayRoute
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if p, err := netip.ParsePrefix(fields[0]); err == nil {
			if cur != nil {
				routes[cur.Prefix] = *cur
			}
			cur = &GatewayRoute{Prefix: p}
			if i := strings.Index(line, "["); i >= 0 {
				if f := strings.Fields(line[i+1:]); len(f) > 0 {
					cur.Protocol = f[0]
				}
			}
			continue
		}
		if cur != nil && fields[0] == "via" && len(fields) > 1 && !cur.NextHop.IsValid() {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				cur.NextHop = a
			}
		}
	}
	if cur != nil {
		routes[cur.Prefix] = *cur
	}
	return routes
}

// GatewaySession is one BGP session of the gateway, as `show protocols all` tells it.
type GatewaySession struct {
	Name     string // seg1_1, ... (the dynamic sessions); segment1/segment2 are the listeners
	State    string // bird's protocol state: up, start, ...
	BGPState string // Established, Active, ...
	Neighbor netip.Addr
	// Imported is the number of routes imported from the node (the "Routes:" line).
	Imported int
	// NeighborRestartTime is the restart time the node announced in its graceful restart
	// capability; "" when it announced none.
	NeighborRestartTime string
	// GracefulRestartActive: the node's session went down and the gateway keeps its routes
	// (graceful restart, helper side) until it comes back or the restart time passes.
	GracefulRestartActive bool
}

// Sessions are the gateway's BGP sessions spawned by nodes, by neighbour address.
func (g *Gateway) Sessions(ctx context.Context) (map[netip.Addr]GatewaySession, error) {
	out, err := g.Birdc(ctx, "show", "protocols", "all")
	if err != nil {
		return nil, err
	}
	return parseBirdSessions(out, func(name string) bool { return strings.HasPrefix(name, "seg") }), nil
}

// BGPSessions are all of bird's BGP sessions with a neighbour address (AddPeer's and
// BirdPeer's ones by their names, the gateway's spawned ones), by neighbour address.
func (g *Bird) BGPSessions(ctx context.Context) (map[netip.Addr]GatewaySession, error) {
	out, err := g.Birdc(ctx, "show", "protocols", "all")
	if err != nil {
		return nil, err
	}
	return parseBirdSessions(out, func(string) bool { return true }), nil
}

// parseBirdSessions reads `show protocols all`, keeping the BGP sessions whose name keep accepts.
func parseBirdSessions(out string, keep func(name string) bool) map[netip.Addr]GatewaySession {
	sessions := map[netip.Addr]GatewaySession{}
	var cur *GatewaySession
	neighborCaps := false // inside the "Neighbor capabilities" block
	flush := func() {
		if cur != nil && cur.Neighbor.IsValid() && keep(cur.Name) {
			sessions[cur.Neighbor] = *cur
		}
		cur = nil
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			neighborCaps = false
			if len(fields) >= 4 && fields[1] == "BGP" {
				cur = &GatewaySession{Name: fields[0], State: fields[3]}
			}
			continue
		}
		if cur == nil {
			continue
		}
		switch strings.TrimSpace(line) {
		case "Neighbor graceful restart active":
			cur.GracefulRestartActive = true
			continue
		case "Neighbor capabilities":
			neighborCaps = true
			continue
		case "Local capabilities":
			neighborCaps = false
			continue
		}
		key, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "Neighbor address":
			cur.Neighbor, _ = netip.ParseAddr(value)
		case "BGP state":
			cur.BGPState = value
		case "Routes":
			fmt.Sscanf(value, "%d imported", &cur.Imported)
		case "Restart time":
			if neighborCaps {
				cur.NeighborRestartTime = value
			}
		case "Session", "Channel ipv4":
			neighborCaps = false
		}
	}
	flush()
	return sessions
}

// WaitRoutes polls Routes until cond holds, and returns the table that satisfied it and when.
func (g *Bird) WaitRoutes(ctx context.Context, timeout time.Duration, cond func(map[netip.Prefix]GatewayRoute) bool) (map[netip.Prefix]GatewayRoute, time.Duration, error) {
	start := time.Now()
	var routes map[netip.Prefix]GatewayRoute
	var err error
	for {
		routes, err = g.Routes(ctx)
		if err == nil && cond(routes) {
			return routes, time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return routes, time.Since(start), fmt.Errorf("gateway routes not as expected after %v (last error %v): %v", timeout, err, routes)
		}
		select {
		case <-ctx.Done():
			return routes, time.Since(start), ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// KernelRoutes is the router namespace's main table (`ip route`), to check that bird installed
// what it learned.
func (g *Bird) KernelRoutes(ctx context.Context) (string, error) {
	return g.netns.IP(ctx, "route", "show", "proto", "bird")
}

// Stop stops bird (SIGTERM, then SIGKILL) and waits for it.
func (g *Bird) Stop() { g.Process.Stop(5 * time.Second) }
