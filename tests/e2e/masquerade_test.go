package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// TestNonMasqueradeCIDRs: node2's agent restarted with --non-masquerade-cidrs=<outside host>/32
// puts it in nonmasq_map, and the outside host then sees node2's pods by their own addresses while
// node1's pods stay masqueraded; restarted without it, the entry goes and node2's pods are
// masqueraded again. The agent ends as it started.
func TestNonMasqueradeCIDRs(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	n := shared.nodes[1]
	var pods []*lab.Pod
	for _, p := range shared.pods {
		if p.Node == n {
			pods = append(pods, p)
		}
	}
	other := shared.pods[0] // on node1
	outside := netip.PrefixFrom(lab.OutsideIP, 32)
	original := slices.Clone(n.ExtraArgs)
	t.Cleanup(func() {
		if slices.Equal(n.ExtraArgs, original) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.RestartAgent(ctx, original, 20*time.Second); err != nil {
			t.Errorf("restoring the agent on %s: %v", n.Name, err)
		}
	})

	srv, err := lab.ServeTCPEcho(l.Outside, netip.AddrPortFrom(lab.OutsideIP, 8081))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	// Unmasqueraded replies go back to the pod's own address: the outside host needs a route to
	// node2's pod CIDR (inside its lab namespace).
	route := []string{"route", "add", n.PodCIDR.String(), "via", n.IP.String()}
	if _, err := l.Outside.IP(ctx, route...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := l.Outside.IP(context.Background(), "route", "del", n.PodCIDR.String()); err != nil {
			t.Errorf("removing the outside host's route: %v", err)
		}
	})

	seenBy := func(p *lab.Pod) (netip.Addr, error) {
		var seen netip.AddrPort
		_, err := eventually(reachTimeout, func() error {
			var err error
			seen, err = lab.TCPEcho(p.Netns, srv.Addr, time.Second)
			return err
		})
		return seen.Addr(), err
	}
	check := func(t *testing.T, p *lab.Pod, want netip.Addr, what string) {
		t.Helper()
		got, err := seenBy(p)
		if err != nil {
			t.Errorf("%s (%s on %s) -> outside: %v", p.Name, p.IP, p.Node.Name, err)
		} else if got != want {
			t.Errorf("outside saw %s from %s on %s, want %s (%s)", got, p.Name, p.Node.Name, want, what)
		}
	}
	inMap := func(t *testing.T) bool {
		t.Helper()
		cidrs, err := n.NonMasquerade()
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(cidrs, outside)
	}

	t.Run("with --non-masquerade-cidrs", func(t *testing.T) {
		args := append(slices.Clone(original), "--non-masquerade-cidrs="+outside.String())
		start := time.Now()
		if err := n.RestartAgent(ctx, args, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("agent on %s restarted with %s in %v", n.Name, args[len(args)-1], time.Since(start).Round(time.Millisecond))
		if !inMap(t) {
			cidrs, _ := n.NonMasquerade()
			t.Errorf("nonmasq_map of %s lacks %s: %v", n.Name, outside, cidrs)
		}
		for _, p := range pods {
			check(t, p, p.IP, "not masqueraded")
		}
		check(t, other, other.Node.IP, fmt.Sprintf("masqueraded: %s has no non-masquerade CIDRs", other.Node.Name))
	})

	t.Run("without", func(t *testing.T) {
		if err := n.RestartAgent(ctx, original, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if inMap(t) {
			cidrs, _ := n.NonMasquerade()
			t.Errorf("nonmasq_map of %s still has %s: %v", n.Name, outside, cidrs)
		}
		for _, p := range pods {
			check(t, p, n.IP, "masqueraded")
		}
	})
}
