package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// addNodeLimit is how soon after a new node's agent is up the rest of the cluster must reach it.
const addNodeLimit = 2 * time.Second

// TestNodeAdded: a node joins; its pods are reachable from pods on every other node within 2 s
// of its agent being ready, and every node's routes_map and nodes_map learn it.
func TestNodeAdded(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	t0 := time.Now()
	n, err := l.AddNode(ctx, "node4", 4, lab.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNode(t, n) })
	tReady := time.Now()
	p, err := l.AddPod(ctx, n, "pod-4a", lab.PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tPod := time.Now()

	var wg sync.WaitGroup
	var mu sync.Mutex
	report := []string{fmt.Sprintf("Node created -> agent ready %v, pod wired %v", tReady.Sub(t0).Round(time.Millisecond), tPod.Sub(tReady).Round(time.Millisecond))}
	for _, other := range shared.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := eventually(addNodeLimit, func() error { return hasNodeEntries(other, n) })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("%s never learned %s: %v", other.Name, n.Name, err)
				return
			}
			report = append(report, fmt.Sprintf("%s maps have %s %v after its agent was ready", other.Name, n.Name, time.Since(tReady).Round(time.Millisecond)))
		}()
	}
	for _, src := range shared.pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := lab.WaitPing(ctx, src.Netns, p.IP, addNodeLimit)
			reached := time.Since(tReady)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("%s (on %s) -> %s (%s on new %s): %v", src.Name, src.Node.Name, p.Name, p.IP, n.Name, err)
				return
			}
			report = append(report, fmt.Sprintf("%s -> %s reachable %v after the agent was ready (%v after Node create)", src.Name, p.Name, reached.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond)))
			if reached > addNodeLimit {
				t.Errorf("%s -> %s: reachable only after %v, want <= %v", src.Name, p.Name, reached, addNodeLimit)
			}
		}()
	}
	wg.Wait()
	t.Log("node add timings:\n  " + strings.Join(report, "\n  "))

	// And back: the new pod reaches the old ones.
	for _, dst := range shared.pods {
		if _, err := lab.WaitPing(ctx, p.Netns, dst.IP, reachTimeout); err != nil {
			t.Errorf("%s -> %s (on %s): %v", p.Name, dst.Name, dst.Node.Name, err)
		}
	}
}

// TestNodeDeleted: a node leaves (Node deleted); every other node's routes_map and nodes_map
// entries for it are removed.
func TestNodeDeleted(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	n, err := l.AddNode(ctx, "node5", 5, lab.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNode(t, n) })
	for _, other := range shared.nodes {
		if _, err := eventually(5*time.Second, func() error { return hasNodeEntries(other, n) }); err != nil {
			t.Fatalf("precondition: %s never learned %s: %v", other.Name, n.Name, err)
		}
	}
	t0 := time.Now()
	if err := n.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s removed (pods deleted, agent stopped, Node deleted) in %v", n.Name, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	for _, other := range shared.nodes {
		took, err := eventually(5*time.Second, func() error { return lacksNodeEntries(other, n) })
		if err != nil {
			t.Errorf("%s: %v", other.Name, err)
			continue
		}
		t.Logf("%s forgot %s within %v of the removal", other.Name, n.Name, took.Round(time.Millisecond))
	}
}

// TestPodDeleted: CNI DEL + Pod deletion removes the pod's endpoints_map entry and releases its
// address; its neighbour on the same node keeps working.
func TestPodDeleted(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	n := shared.nodes[0]
	p, err := l.AddPod(ctx, n, "pod-del", lab.PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eps, err := n.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := eps[p.IP]; !ok {
		t.Fatalf("precondition: %s has no endpoints_map entry for %s (%s); entries: %v", n.Name, p.Name, p.IP, keys(eps))
	}
	if _, err := lab.WaitPing(ctx, shared.pods[2].Netns, p.IP, reachTimeout); err != nil {
		t.Errorf("precondition: %s -> %s: %v", shared.pods[2].Name, p.Name, err)
	}
	if err := p.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := eventually(2*time.Second, func() error {
		eps, err := n.Endpoints()
		if err != nil {
			return err
		}
		if _, ok := eps[p.IP]; ok {
			return fmt.Errorf("endpoints_map of %s still has %s", n.Name, p.IP)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if ips := allocatedIPs(t, n); ips[p.IP] {
		t.Errorf("host-local still holds %s after DEL", p.IP)
	}
	other := shared.pods[1] // pod-1b, same node
	if _, err := lab.WaitPing(ctx, shared.pods[2].Netns, other.IP, reachTimeout); err != nil {
		t.Errorf("%s after deleting its neighbour: %v", other.Name, err)
	}
}

// TestAgentRestartNoLoss: continuous UDP echo streams (same node and across nodes) run while the
// agents of both nodes are killed with SIGKILL and restarted; not one datagram is lost, and the
// restarted agents keep the live pods' endpoints.
func TestAgentRestartNoLoss(t *testing.T) {
	sharedLab(t)
	ctx := t.Context()
	n1, n2 := shared.nodes[0], shared.nodes[1]
	src := shared.pods[0]                              // pod-1a
	dsts := []*lab.Pod{shared.pods[1], shared.pods[2]} // pod-1b (same node), pod-2a (remote)
	before, err := n1.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	lossless(t, src, dsts, 9000, "the agent restarts", func() {
		for _, n := range []*lab.Node{n1, n2} {
			n.KillAgent()
			t.Logf("killed the agent on %s (SIGKILL)", n.Name)
		}
		time.Sleep(time.Second) // forwarding on pinned state alone
		for _, n := range []*lab.Node{n1, n2} {
			start := time.Now()
			if err := n.StartAgent(); err != nil {
				t.Fatal(err)
			}
			rewritten, err := n.WaitRewritten(ctx, start, 15*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if rewritten {
				t.Logf("agent on %s restarted and rewrote node.json in %v", n.Name, time.Since(start).Round(time.Millisecond))
			} else {
				t.Logf("agent on %s restarted but did not rewrite node.json within 15 s; going on", n.Name)
			}
		}
		time.Sleep(2 * time.Second) // the restarted agents resync and garbage-collect
	})
	after, err := n1.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	for ip := range before {
		if _, ok := after[ip]; !ok {
			t.Errorf("restarted agent on %s dropped the endpoint %s of a live pod", n1.Name, ip)
		}
	}
}

// TestCNIAddDelCycles: 200 ADD/DEL cycles through libcni leave no address in host-local, no link
// in the node namespace and no endpoints_map entry behind.
func TestCNIAddDelCycles(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	n := shared.nodes[2]
	cycles := 200
	if testing.Short() {
		cycles = 20
	}
	linksBefore := nodeLinks(t, n)
	ipsBefore := allocatedIPs(t, n)
	epsBefore, err := n.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	// Four workers, as a kubelet starting and stopping pods in parallel would.
	const workers = 4
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < cycles; i += workers {
				p, err := l.AddPod(ctx, n, fmt.Sprintf("churn-%d", i), lab.PodOptions{NoObject: true})
				if err != nil {
					errs <- fmt.Errorf("cycle %d: %w", i, err)
					return
				}
				if err := p.Delete(ctx); err != nil {
					errs <- fmt.Errorf("cycle %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d ADD/DEL cycles by %d workers in %v (%v per cycle)", cycles, workers, time.Since(start).Round(time.Millisecond), (time.Since(start) / time.Duration(cycles)).Round(time.Millisecond))

	if ips := allocatedIPs(t, n); len(ips) != len(ipsBefore) {
		t.Errorf("host-local holds %d addresses, %d before the cycles: %v", len(ips), len(ipsBefore), ips)
	}
	if links := nodeLinks(t, n); len(links) != len(linksBefore) {
		t.Errorf("%s has %d links, %d before the cycles:\nbefore %v\nafter  %v", n.Name, len(links), len(linksBefore), linksBefore, links)
	}
	eps, err := n.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != len(epsBefore) {
		t.Errorf("endpoints_map has %d entries, %d before the cycles: %v", len(eps), len(epsBefore), keys(eps))
	}
	// The shared pods on the node still work.
	for _, p := range shared.pods {
		if p.Node == n {
			if _, err := lab.WaitPing(ctx, shared.pods[0].Netns, p.IP, reachTimeout); err != nil {
				t.Errorf("%s after the cycles: %v", p.Name, err)
			}
		}
	}
}

// hasNodeEntries says whether node's maps have a route for peer's pod CIDR and peer in nodes_map.
func hasNodeEntries(node, peer *lab.Node) error {
	routes, err := node.Routes()
	if err != nil {
		return err
	}
	r, ok := routes[peer.PodCIDR]
	if !ok {
		return fmt.Errorf("routes_map of %s has no %s (has %v)", node.Name, peer.PodCIDR, keys(routes))
	}
	if r.NodeIP != peer.IP {
		return fmt.Errorf("routes_map of %s: %s via %s, want %s", node.Name, peer.PodCIDR, r.NodeIP, peer.IP)
	}
	nodes, err := node.RemoteNodes()
	if err != nil {
		return err
	}
	if _, ok := nodes[peer.IP]; !ok {
		return fmt.Errorf("nodes_map of %s has no %s (has %v)", node.Name, peer.IP, keys(nodes))
	}
	return nil
}

// lacksNodeEntries says whether node's maps have forgotten peer entirely.
func lacksNodeEntries(node, peer *lab.Node) error {
	routes, err := node.Routes()
	if err != nil {
		return err
	}
	for p, r := range routes {
		if p == peer.PodCIDR || r.NodeIP == peer.IP {
			return fmt.Errorf("routes_map of %s still has %s via %s", node.Name, p, r.NodeIP)
		}
	}
	nodes, err := node.RemoteNodes()
	if err != nil {
		return err
	}
	if _, ok := nodes[peer.IP]; ok {
		return fmt.Errorf("nodes_map of %s still has %s", node.Name, peer.IP)
	}
	return nil
}

func removeNode(t *testing.T, n *lab.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Remove(ctx); err != nil {
		t.Logf("removing %s: %v", n.Name, err)
	}
}

// allocatedIPs lists the addresses host-local has reserved on the node (one file per address).
func allocatedIPs(t *testing.T, n *lab.Node) map[netip.Addr]bool {
	t.Helper()
	out := map[netip.Addr]bool{}
	err := filepath.WalkDir(n.IPAMDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if a, err := netip.ParseAddr(d.Name()); err == nil {
			out[a] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nodeLinks lists the link names in the node namespace.
func nodeLinks(t *testing.T, n *lab.Node) []string {
	t.Helper()
	out, err := n.Netns.IP(t.Context(), "-br", "link")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func keys[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
