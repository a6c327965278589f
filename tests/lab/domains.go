package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// An edge cluster spans network domains: the cloud, where the API server runs, and sites. Each
// domain is its own bridge in the switch namespace; a router namespace has a leg on every bridge
// at .1 of the domain's network. The router forwards between two domains' private addresses only
// over a private line (cloud <-> site-a, up unless a test cuts it) and otherwise only to the
// "internet": every node and the API server have a public address in 203.0.113.0/24 that the
// router maps 1:1 to the private one with iptables (DNAT on the way in, and SNAT of the source to
// its own public address for those connections, so both ends see public addresses). Site-b
// therefore reaches the other domains only through public addresses.
//
// The domains are built lazily (EnableDomains, or AddNode of a node that needs them): a lab whose
// nodes are all in the cloud keeps a single bridge, no router and no default routes, as before.

// The lab's network domains.
const (
	DomainCloud = "cloud"
	DomainSiteA = "site-a"
	DomainSiteB = "site-b"
)

// The domains' networks beyond the cloud's (UnderlayNet), and the public addresses.
var (
	SiteANet          = netip.MustParsePrefix("172.31.0.0/24")
	SiteBNet          = netip.MustParsePrefix("172.32.0.0/24")
	PublicNet         = netip.MustParsePrefix("203.0.113.0/24")
	APIServerPublicIP = netip.MustParseAddr("203.0.113.2")
)

// domain is one network domain: its underlay network and its bridge in the switch namespace.
type domain struct {
	name   string
	net    netip.Prefix
	bridge string
}

var (
	cloudDomain = domain{DomainCloud, UnderlayNet, switchBridge}
	domains     = []domain{cloudDomain, {DomainSiteA, SiteANet, "br-site-a"}, {DomainSiteB, SiteBNet, "br-site-b"}}
	// privateLines are the domain pairs joined by a private line, in the order their chain is
	// named by.
	privateLines = [][2]string{{DomainCloud, DomainSiteA}}
)

// lookupDomain finds a domain by name; "" is the cloud.
func lookupDomain(name string) (domain, error) {
	if name == "" {
		return cloudDomain, nil
	}
	for _, d := range domains {
		if d.name == name {
			return d, nil
		}
	}
	return domain{}, fmt.Errorf("unknown network domain %q (the lab has %s)", name, strings.Join(Domains(), ", "))
}

// host is the address of host number h in the domain's network.
func (d domain) host(h int) netip.Addr {
	a := d.net.Addr().As4()
	a[3] = byte(h)
	return netip.AddrFrom4(a)
}

// Domains lists the lab's network domains, the cloud first.
func Domains() []string {
	out := make([]string, len(domains))
	for i, d := range domains {
		out[i] = d.name
	}
	return out
}

// DomainNet is the underlay network of a domain ("" is the cloud); the zero Prefix for an
// unknown domain.
func DomainNet(name string) netip.Prefix {
	d, err := lookupDomain(name)
	if err != nil {
		return netip.Prefix{}
	}
	return d.net
}

// DomainNodeIP is the private underlay address of node number n in a domain: .(10+n) of the
// domain's network (NodeIP(n) in the cloud); the zero Addr for an unknown domain.
func DomainNodeIP(name string, n int) netip.Addr {
	d, err := lookupDomain(name)
	if err != nil {
		return netip.Addr{}
	}
	return d.host(10 + n)
}

// RouterIP is the router's leg in a domain, every host's default gateway there: .1 of the
// domain's network; the zero Addr for an unknown domain.
func RouterIP(name string) netip.Addr {
	d, err := lookupDomain(name)
	if err != nil {
		return netip.Addr{}
	}
	return d.host(1)
}

// PublicIP is the public address of node number n, whatever its domain: 203.0.113.(10+n).
func PublicIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + n)}) }

// underlayHost is a namespace plugged into a domain's bridge.
type underlayHost struct {
	netns  Netns
	domain domain
	ip     netip.Addr
	public netip.Addr // the zero Addr: none (the outside host)
}

// Router is the router namespace (iptables counters, captures on its legs, which are named after
// the domains), or "" while the lab has no domains but the cloud.
func (l *Lab) Router() Netns {
	l.netMu.Lock()
	defer l.netMu.Unlock()
	return l.router
}

// EnableDomains builds the site domains' bridges, the router with its private lines up and the
// public addresses' NAT, and gives every host already on the underlay a default route through
// its domain's router leg (hosts added later get theirs at once). AddNode calls it for a node
// outside the cloud or with PublicIPOverwrite; once built, calling it again does nothing.
func (l *Lab) EnableDomains(ctx context.Context) error {
	if err := l.checkOpen(); err != nil {
		return err
	}
	l.netMu.Lock()
	defer l.netMu.Unlock()
	return l.enableDomainsLocked(ctx)
}

func (l *Lab) enableDomainsLocked(ctx context.Context) error {
	if l.router != "" {
		return nil
	}
	start := time.Now()
	for _, d := range domains {
		if d.bridge == switchBridge {
			continue // built with the switch
		}
		if _, err := l.Switch.IP(ctx, "link", "add", d.bridge, "type", "bridge"); err != nil {
			return err
		}
		if _, err := l.Switch.IP(ctx, "link", "set", d.bridge, "up"); err != nil {
			return err
		}
	}
	rt, err := l.addNetns(ctx, "rt")
	if err != nil {
		return err
	}
	// No ICMP redirects: a hairpin (cloud -> a cloud node's public address) leaves by the leg it
	// came in on, and a redirect would send the client straight to the private address, past
	// the NAT. "default" before the legs exist, so they inherit it.
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.conf.all.send_redirects", "0"},
		{"net.ipv4.conf.default.send_redirects", "0"},
	} {
		if err := rt.Sysctl(kv[0], kv[1]); err != nil {
			return err
		}
	}
	for _, d := range domains {
		if err := l.plug(ctx, rt, d.name, "rt-"+d.name, d.host(1), d); err != nil {
			return err
		}
	}
	if _, err := rt.execInput(ctx, routerRules(), "iptables-restore", "-w", "10"); err != nil {
		return fmt.Errorf("router rules: %w", err)
	}
	l.router = rt
	for _, line := range privateLines {
		l.lines[lineChain(line)] = true
	}
	for _, h := range l.hosts {
		if err := l.wireHost(ctx, h); err != nil {
			return err
		}
	}
	l.Logf("lab %s: domains %s and router %s up after %v", l.ID, strings.Join(Domains(), ", "), rt, time.Since(start).Round(time.Millisecond))
	return nil
}

// Chains in the router's iptables: public-dnat and public-snat hold one rule per public address.
// FORWARD lets through connections to a public address (conntrack state DNAT, both directions)
// and the private lines that are up; every other crossing between domains is dropped.
const (
	chainDNAT = "public-dnat"
	chainSNAT = "public-snat"
)

func routerRules() string {
	var b strings.Builder
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainDNAT, chainSNAT)
	fmt.Fprintf(&b, "-A PREROUTING -j %s\n", chainDNAT)
	fmt.Fprintf(&b, "-A POSTROUTING -m conntrack --ctstate DNAT -j %s\n", chainSNAT)
	// A client without a public address (the outside host) still gets an answer: it is seen as
	// the router.
	b.WriteString("-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE\nCOMMIT\n")
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, line := range privateLines {
		fmt.Fprintf(&b, ":%s - [0:0]\n", lineChain(line))
	}
	b.WriteString("-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT\n")
	for _, line := range privateLines {
		fmt.Fprintf(&b, "-A FORWARD -j %s\n", lineChain(line))
		b.WriteString(lineRules(line))
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func lineChain(line [2]string) string { return "line-" + line[0] + "-" + line[1] }

// lineRules are the accept rules of a private line that is up, in iptables-restore form.
func lineRules(line [2]string) string {
	a, _ := lookupDomain(line[0])
	b, _ := lookupDomain(line[1])
	chain := lineChain(line)
	var rules strings.Builder
	for _, an := range lineNets(a) {
		for _, bn := range lineNets(b) {
			fmt.Fprintf(&rules, "-A %s -s %s -d %s -j ACCEPT\n-A %s -s %s -d %s -j ACCEPT\n", chain, an, bn, chain, bn, an)
		}
	}
	return rules.String()
}

// lineNets are the networks of a domain a private line carries: all of its segments (site-a's
// second one, routesite.go, whether built or not).
func lineNets(d domain) []netip.Prefix {
	if d.name == DomainSiteA {
		return []netip.Prefix{d.net, SiteASegment2Net}
	}
	return []netip.Prefix{d.net}
}

// SetPrivateLine brings the private line between domains a and b up or down, live: while it is
// down the router drops every packet between their private addresses, established connections'
// included; public addresses keep working. Only cloud <-> site-a has a line. It builds the
// domains first if need be (a line is up once they exist).
func (l *Lab) SetPrivateLine(ctx context.Context, a, b string, up bool) error {
	i := slices.IndexFunc(privateLines, func(p [2]string) bool { return p == [2]string{a, b} || p == [2]string{b, a} })
	if i < 0 {
		return fmt.Errorf("no private line between domains %q and %q (lines: %v)", a, b, privateLines)
	}
	line := privateLines[i]
	if err := l.checkOpen(); err != nil {
		return err
	}
	l.netMu.Lock()
	defer l.netMu.Unlock()
	if err := l.enableDomainsLocked(ctx); err != nil {
		return err
	}
	chain := lineChain(line)
	if l.lines[chain] == up {
		return nil
	}
	rules := "*filter\n-F " + chain + "\n"
	if up {
		rules += lineRules(line)
	}
	rules += "COMMIT\n"
	if _, err := l.router.execInput(ctx, rules, "iptables-restore", "-w", "10", "--noflush"); err != nil {
		return fmt.Errorf("private line %s <-> %s up=%v: %w", line[0], line[1], up, err)
	}
	l.lines[chain] = up
	l.Logf("lab %s: private line %s <-> %s up=%v", l.ID, line[0], line[1], up)
	return nil
}

// joinUnderlay records a host plugged into its domain's bridge and, once the router exists,
// routes it through the router and maps its public address.
func (l *Lab) joinUnderlay(ctx context.Context, h *underlayHost) error {
	l.netMu.Lock()
	defer l.netMu.Unlock()
	l.hosts = append(l.hosts, h)
	if l.router == "" {
		return nil
	}
	return l.wireHost(ctx, h)
}

// leaveUnderlay forgets a host whose namespace is gone and unmaps its public address.
func (l *Lab) leaveUnderlay(ctx context.Context, h *underlayHost) error {
	l.netMu.Lock()
	defer l.netMu.Unlock()
	l.hosts = slices.DeleteFunc(l.hosts, func(x *underlayHost) bool { return x == h })
	if l.router == "" || !h.public.IsValid() {
		return nil
	}
	for _, rule := range natRules(h) {
		if _, err := l.router.Exec(ctx, "iptables", append([]string{"-w", "10", "-t", "nat", "-D"}, rule...)...); err != nil {
			return fmt.Errorf("unmapping %s: %w", h.public, err)
		}
	}
	return nil
}

// wireHost gives h its default route through its domain's router leg and maps its public
// address. Same-subnet traffic keeps going over the bridge directly.
func (l *Lab) wireHost(ctx context.Context, h *underlayHost) error {
	if _, err := h.netns.IP(ctx, "route", "replace", "default", "via", h.domain.host(1).String(), "dev", "eth0"); err != nil {
		return err
	}
	if !h.public.IsValid() {
		return nil
	}
	for _, rule := range natRules(h) {
		if _, err := l.router.Exec(ctx, "iptables", append([]string{"-w", "10", "-t", "nat", "-A"}, rule...)...); err != nil {
			return fmt.Errorf("mapping %s to %s: %w", h.public, h.ip, err)
		}
	}
	return nil
}

// natRules are h's 1:1 NAT rules (chain first, for iptables -A/-D): connections to its public
// address go to its private one, and its side of connections to a public address comes from its
// own public address.
func natRules(h *underlayHost) [][]string {
	return [][]string{
		{chainDNAT, "-d", h.public.String() + "/32", "-j", "DNAT", "--to-destination", h.ip.String()},
		{chainSNAT, "-s", h.ip.String() + "/32", "-j", "SNAT", "--to-source", h.public.String()},
	}
}
