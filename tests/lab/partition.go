package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// A partition cuts a site off from the API server, as an edge site loses its link to the cloud:
// the router drops every packet between the site's legs (site-a's second segment too) and the
// API server's address, both ways, established connections included; the private line and the
// public addresses keep working for everything else, and traffic inside the site never crosses
// the router anyway. Nodes outside the cloud reach the API server through the router (its public
// address, NAT'ed to the private one before the filter sees it), so the rules match the private
// address. Only iptables rules in the router namespace change.

// partitionChain is the router's FORWARD chain holding a site's cut.
func partitionChain(site string) string { return "partition-" + site }

// siteLegs are the router's interfaces leading to a site: its domain's leg, and site-a's second
// segment once built.
func (l *Lab) siteLegs(site string) []string {
	legs := []string{site}
	if site == DomainSiteA && l.segment2 {
		legs = append(legs, segmentLeg)
	}
	return legs
}

// Partition cuts site (DomainSiteA or DomainSiteB) off from the API server until Heal. Cutting a
// site already cut does nothing.
func (l *Lab) Partition(ctx context.Context, site string) error {
	if site == DomainCloud || site == "" {
		return fmt.Errorf("partition: the cloud holds the API server; cut a site (%s, %s)", DomainSiteA, DomainSiteB)
	}
	if _, err := lookupDomain(site); err != nil {
		return fmt.Errorf("partition: %w", err)
	}
	if err := l.checkOpen(); err != nil {
		return err
	}
	l.netMu.Lock()
	defer l.netMu.Unlock()
	if err := l.enableDomainsLocked(ctx); err != nil {
		return err
	}
	chain := partitionChain(site)
	if _, err := l.router.Exec(ctx, "iptables", "-w", "10", "-C", "FORWARD", "-j", chain); err == nil {
		return nil
	}
	api := l.API.IP.String() + "/32"
	var b strings.Builder
	fmt.Fprintf(&b, "*filter\n:%s - [0:0]\n", chain)
	for _, leg := range l.siteLegs(site) {
		fmt.Fprintf(&b, "-A %s -i %s -d %s -j DROP\n-A %s -o %s -s %s -j DROP\n", chain, leg, api, chain, leg, api)
	}
	// First in FORWARD: ahead of the accepts of NAT'ed connections and of the private line.
	fmt.Fprintf(&b, "-I FORWARD 1 -j %s\nCOMMIT\n", chain)
	if _, err := l.router.execInput(ctx, b.String(), "iptables-restore", "-w", "10", "--noflush"); err != nil {
		return fmt.Errorf("partition of %s: %w", site, err)
	}
	l.Logf("lab %s: %s cut off from the API server %s", l.ID, site, l.API.IP)
	return nil
}

// Heal ends site's partition; healing a site not cut does nothing.
func (l *Lab) Heal(ctx context.Context, site string) error {
	if err := l.checkOpen(); err != nil {
		return err
	}
	l.netMu.Lock()
	defer l.netMu.Unlock()
	if l.router == "" {
		return nil
	}
	chain := partitionChain(site)
	if _, err := l.router.Exec(ctx, "iptables", "-w", "10", "-C", "FORWARD", "-j", chain); err != nil {
		return nil
	}
	rules := fmt.Sprintf("*filter\n-D FORWARD -j %[1]s\n-F %[1]s\n-X %[1]s\nCOMMIT\n", chain)
	if _, err := l.router.execInput(ctx, rules, "iptables-restore", "-w", "10", "--noflush"); err != nil {
		return fmt.Errorf("healing %s: %w", site, err)
	}
	l.Logf("lab %s: %s reaches the API server again", l.ID, site)
	return nil
}

// PartitionDrops is the number of packets the router dropped for site's cut so far (0 when the
// site is not cut).
func (l *Lab) PartitionDrops(ctx context.Context, site string) (int, error) {
	l.netMu.Lock()
	defer l.netMu.Unlock()
	if l.router == "" {
		return 0, nil
	}
	out, err := l.router.Exec(ctx, "iptables", "-w", "10", "-nvxL", partitionChain(site))
	if err != nil {
		return 0, nil
	}
	total := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "DROP" {
			var n int
			fmt.Sscan(f[0], &n)
			total += n
		}
	}
	return total, nil
}

// AgentMetricsAddr is where the agent serves /metrics, /healthz and /readyz in its node's
// namespace (its --metrics-addr default).
var AgentMetricsAddr = netip.MustParseAddrPort("127.0.0.1:9962")

// AgentGet GETs path from the node's agent (AgentMetricsAddr, inside the node's namespace) and
// returns the status and the body.
func (n *Node) AgentGet(path string) (int, string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return DialTCP(n.Netns, AgentMetricsAddr, time.Second)
		},
	}}
	resp, err := client.Get("http://" + AgentMetricsAddr.String() + path)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s from the agent on %s: %w", path, n.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// AgentMetric reads one unlabelled sample of the agent's /metrics (false when absent).
func (n *Node) AgentMetric(name string) (float64, bool, error) {
	status, body, err := n.AgentGet("/metrics")
	if err != nil {
		return 0, false, err
	}
	if status != http.StatusOK {
		return 0, false, fmt.Errorf("/metrics on %s: %d", n.Name, status)
	}
	for _, line := range strings.Split(body, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			var v float64
			if _, err := fmt.Sscan(f[1], &v); err != nil {
				return 0, false, fmt.Errorf("%s on %s: %q: %w", name, n.Name, line, err)
			}
			return v, true, nil
		}
	}
	return 0, false, nil
}
