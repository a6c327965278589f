package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
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

// TestMasqueradeThroughNetfilter: a pod's connection to a host outside the cluster leaves through
// the host stack (masqueraded after netfilter, on the NIC) and its replies are handed back to the
// host stack after the masquerade is undone, so the node's conntrack sees both directions. With
// kube-proxy's `-m conntrack --ctstate INVALID -j DROP` in FORWARD (its KUBE-FORWARD chain, and many
// host firewalls) the connection carries data both ways, and once the outside host closes its side
// the node's conntrack holds the flow in CLOSE_WAIT for kube-proxy's hour (the agent sets it from
// --ct-tcp-close-wait-timeout): what the e2e spec "KubeProxy should set TCP CLOSE_WAIT timeout" reads.
func TestMasqueradeThroughNetfilter(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	p := shared.pods[0]
	n := p.Node
	rule := []string{"FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"}
	if out, err := n.Netns.Exec(ctx, "iptables", append([]string{"-I"}, rule...)...); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := n.Netns.Exec(context.Background(), "iptables", append([]string{"-D"}, rule...)...); err != nil {
			t.Errorf("removing the iptables rule: %v: %s", err, out)
		}
	})

	// The outside host answers one line, then closes its side.
	server := netip.AddrPortFrom(lab.OutsideIP, 8083)
	var ln net.Listener
	if err := lab.InNetns(l.Outside, func() (err error) { ln, err = net.Listen("tcp4", server.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			fmt.Fprintf(c, "echo %s", line)
		}
	}()

	c, err := lab.DialTCP(p.Netns, server, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // only at the end: the pod's side stays open (CLOSE_WAIT)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	payload := strings.Repeat("x", 3000) // a few segments after the handshake
	if _, err := fmt.Fprintf(c, "%s\n", payload); err != nil {
		t.Fatalf("sending: %v", err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil || line != "echo "+payload+"\n" {
		t.Fatalf("reply through the node with INVALID dropped in FORWARD: %d bytes, %v; want the echo (%d bytes)", len(line), err, len(payload)+6)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("after the reply: %v, want EOF (the outside host closed)", err)
	}

	// The node's conntrack: "ipv4 2 tcp 6 <timeout> CLOSE_WAIT src=<pod> dst=<outside> ... dport=8083 ..."
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	var entry string
	_, err = eventually(5*time.Second, func() error {
		out, err := n.Netns.Exec(ctx, "cat", "/proc/net/nf_conntrack")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, fmt.Sprintf("src=%s dst=%s sport=%d dport=%d ", local.Addr(), server.Addr(), local.Port(), server.Port())) {
				entry = l
				if strings.Contains(l, " CLOSE_WAIT ") {
					return nil
				}
			}
		}
		return fmt.Errorf("no CLOSE_WAIT entry for %s -> %s in %s's conntrack (last seen: %q)", local, server, n.Name, entry)
	})
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(entry)
	timeout, err := strconv.Atoi(fields[4])
	if err != nil || timeout < 3600-60 || timeout > 3600 {
		t.Errorf("CLOSE_WAIT timeout %q in %q, want about 3600 s (kube-proxy's hour)", fields[4], entry)
	}
	t.Logf("%s's conntrack: %s", n.Name, entry)
}
