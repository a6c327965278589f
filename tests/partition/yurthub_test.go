package partition

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// hubs are the YurtHubs of a site built through YurtHub, by node name.
type hubs map[string]*lab.YurtHub

// buildThroughYurtHub builds the site with OpenYurt's YurtHub on the nodes named in behind (s1,
// s2): each of those nodes' agents reaches the API server only through its node's YurtHub
// (https://169.254.2.1:10268), as on an OpenYurt edge node with api-server-host/api-server-port
// set to it; the others' agents reach it directly.
func buildThroughYurtHub(t *testing.T, opts lab.YurtHubOptions, behind ...string) (*site, hubs) {
	t.Helper()
	lab.ConfigForTest(t) // skips without root, as every lab test
	bin, err := lab.YurtHubBinFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	hs := hubs{}
	s := buildSite(t, func(ctx context.Context, l *lab.Lab, name string, index int) (*lab.Node, error) {
		if !slices.Contains(behind, name) {
			n, err := l.AddNode(ctx, name, index, lab.NodeOptions{Domain: lab.DomainSiteA})
			if err != nil {
				return nil, err
			}
			return n, n.WaitReady(ctx, 60*time.Second)
		}
		n, err := l.AddNode(ctx, name, index, lab.NodeOptions{Domain: lab.DomainSiteA, NoAgent: true})
		if err != nil {
			return nil, err
		}
		if hs[name], err = l.StartYurtHub(ctx, n, bin, opts); err != nil {
			return nil, err
		}
		if err := n.StartAgent(); err != nil {
			return nil, err
		}
		return n, n.WaitReady(ctx, 60*time.Second)
	})
	waitNodesCached(t, s.lab, hs)
	return s, hs
}

// waitNodesCached waits until each hub holds every Node in its disk cache for the agent: a
// partition leaves the agents behind it that cache, and a new agent started from it programs the
// Nodes it names and no others. YurtHub v1.7.0 leaves a list out of its cache when one of its
// objects is being cached at that moment; the agent asks for its own Node only after its Node
// list (pkg/agent getNode), and this checks the outcome.
func waitNodesCached(t *testing.T, l *lab.Lab, hs hubs) {
	t.Helper()
	list, err := l.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range list.Items {
		want = append(want, n.Name)
	}
	for name, h := range hs {
		var cached []string
		if _, ok := waitFor(10*time.Second, func() bool {
			cached, err = h.CachedNodes()
			return err == nil && !slices.ContainsFunc(want, func(n string) bool { return !slices.Contains(cached, n) })
		}); !ok {
			t.Fatalf("%s: YurtHub's cache for the agent holds the Nodes %v, want %v (%v); its log on caching:\n%s",
				name, cached, want, err, h.Process.LogGrep("could not cache", "storage is pending", "under processing"))
		}
	}
}

// waitCloudHealth waits until every hub finds the API server healthy (or not), and returns when
// the last one did.
func waitCloudHealth(t *testing.T, hs hubs, healthy bool, timeout time.Duration) time.Time {
	t.Helper()
	for name, h := range hs {
		var last error
		if _, ok := waitFor(timeout, func() bool {
			ok, err := h.CloudHealthy()
			last = err
			return err == nil && ok == healthy
		}); !ok {
			t.Fatalf("%s: YurtHub did not find the API server healthy=%v within %v (%v); log tail:\n%s", name, healthy, timeout, last, h.Process.LogTail(30))
		}
	}
	return time.Now()
}

// TestPartitionThroughYurtHub (issue 18 items 1, 2 and 4) is TestPartition with OpenYurt's YurtHub
// between site-a's agents and the API server. While site-a is cut off, YurtHub answers the agents
// from its cache (lists, gets, and /version, so the agents' own probe finds their API server,
// YurtHub, reachable), holds their watches open without events, and fakes their writes. First
// cut: no stream loses a datagram, /healthz stays 200, no map entry changes while a Service and a
// node are added in the API server, and both are in the maps within 5 s of YurtHub finding the API
// server healthy again. Second cut: s2's agent is killed (SIGKILL) once YurtHub serves from its
// cache, and a new agent starts from that cache alone: it programs the datapath (node.json
// rewritten) during the cut with the maps as they were, and a Service added during the cut is in
// its maps within 5 s of YurtHub's return to the API server.
func TestPartitionThroughYurtHub(t *testing.T) {
	s, hs := buildThroughYurtHub(t, lab.YurtHubOptions{}, "s1", "s2")
	l, s1, s2 := s.lab, s.s1, s.s2
	cut := cutDuration(t)
	ctx := t.Context()
	// YurtHub's defaults: it notices a cut after failed Lease renewals (10 s apart, 3 tries of 2 s)
	// and a return after 2 renewals in a row, 10 s apart.
	const hubNotices = 45 * time.Second

	t.Run("cut-and-heal", func(t *testing.T) {
		before := map[*lab.Node]map[string][]byte{s1: s.settledDump(t, s1), s2: s.settledDump(t, s2)}
		streams := s.startStreams(t)
		health := healthWatch(t, s1, s2)
		time.Sleep(500 * time.Millisecond)
		cutAt, heal := cutSite(ctx, t, l)
		defer heal()
		t.Logf("YurtHubs serve from their caches %v after the cut", waitCloudHealth(t, hs, false, hubNotices).Sub(cutAt).Round(100*time.Millisecond))
		late1, c3 := s.changeCloud(ctx, t)
		sleepOutCut(cutAt, cut)
		for _, n := range []*lab.Node{s1, s2} {
			sameDump(t, n, before[n], s.dump(t, n), fmt.Sprintf("after %v cut off", time.Since(cutAt).Round(time.Second)))
			code, body, err := n.AgentGet("/readyz")
			if err != nil || code != http.StatusOK {
				t.Errorf("%s: /readyz during the cut: %d %q %v, want 200 (the agent was ready)", n.Name, code, body, err)
			}
			t.Logf("%s: /readyz during the cut: %q", n.Name, body)
		}
		heal()
		healAt := time.Now()
		hubsBack := waitCloudHealth(t, hs, true, hubNotices)
		t.Logf("YurtHubs proxy to the API server again %v after the heal", hubsBack.Sub(healAt).Round(100*time.Millisecond))
		for _, n := range []*lab.Node{s1, s2} {
			s.checkCloudChanges(t, n, late1, c3, hubNotices, healAt, hubsBack)
		}
		streams.check(t, "the cut and the heal")
		if failures := health(); len(failures) > 0 {
			t.Errorf("/healthz failed during the cut:\n%s", strings.Join(failures, "\n"))
		}
	})

	t.Run("agent-killed-and-started-during-cut", func(t *testing.T) {
		before := s.settledDump(t, s2)
		streams := s.startStreams(t)
		time.Sleep(500 * time.Millisecond)
		cutAt, heal := cutSite(ctx, t, l)
		defer heal()
		// The new agent must start from YurtHub's cache: kill the old one once YurtHub serves it.
		waitCloudHealth(t, hubs{s2.Name: hs[s2.Name]}, false, hubNotices)
		startedAt := restartAgent(t, s2, cutAt)
		late, err := l.CreateService(ctx, "late-2", udpService(lateBase+2))
		if err != nil {
			t.Fatal(err)
		}
		// From YurtHub's cache the new agent starts as if connected: it rewrites node.json and
		// turns ready during the cut.
		if rewritten, err := s2.WaitRewritten(ctx, startedAt, 30*time.Second); err != nil || !rewritten {
			t.Errorf("%s: the new agent did not program the datapath from YurtHub's cache within 30 s (%v); log tail:\n%s", s2.Name, err, s2.Agent.LogTail(40))
		} else {
			t.Logf("%s: the new agent rewrote node.json %v after its start, from YurtHub's cache", s2.Name, time.Since(startedAt).Round(time.Millisecond))
		}
		health := healthWatch(t, s2)
		sleepOutCut(cutAt, cut)
		if done, err := s2.Agent.Exited(); done {
			t.Fatalf("the new agent on %s exited during the cut (%v):\n%s", s2.Name, err, s2.Agent.LogTail(40))
		}
		sameDump(t, s2, before, s.dump(t, s2), fmt.Sprintf("with a new agent %v into the cut", time.Since(cutAt).Round(time.Second)))
		code, body, err := s2.AgentGet("/readyz")
		t.Logf("%s: /readyz of the new agent during the cut: %d %q %v", s2.Name, code, body, err)
		heal()
		healAt := time.Now()
		hubsBack := waitCloudHealth(t, hs, true, hubNotices)
		s.checkCloudChanges(t, s2, late, nil, hubNotices, healAt, hubsBack)
		streams.check(t, "the agent's SIGKILL and restart during the cut")
		if failures := health(); len(failures) > 0 {
			t.Errorf("/healthz of the new agent failed during the cut:\n%s", strings.Join(failures, "\n"))
		}
	})
}

// TestRebootDuringPartitionThroughYurtHub (issue 18 items 3 and 4) is TestRebootDuringPartition
// with YurtHub between site-a's agents and the API server: s2 reboots during the cut, and YurtHub
// comes back with it (killed and started again, its cache on disk kept) before the agent. The new
// agent starts from its snapshot (YurtHub, restarted cut off, answers only about 9 s after its
// start), then its informers sync from YurtHub's cache, as the objects were before the cut: p3's
// EndpointSlice names p3's old address (openyurt#2810). p3 and a client p4 are re-created through
// the CNI plugin; during the cut s2's pods and s1's reach each other and web answers p4 from the
// new p3, also at the end of the cut, after the cache's objects reached the maps (a 2 ms stream,
// 0 lost); after the heal, with p3's Pod object updated, s1 reaches web at p3's new address.
func TestRebootDuringPartitionThroughYurtHub(t *testing.T) {
	// Only the rebooted node behind YurtHub: s1's YurtHub would only add its own recovery after
	// the heal (its shared cache's watch of the API server may hang on a connection the cut
	// killed, 46 s to over 2 min seen), which TestPartitionThroughYurtHub's heal covers.
	s, hs := buildThroughYurtHub(t, lab.YurtHubOptions{}, "s2")
	l, s2 := s.lab, s.s2
	ctx := t.Context()
	oldP3 := s.p3.IP
	const hubNotices = 45 * time.Second
	s.waitSnapshotNamesP3(t)

	cutAt, heal := cutSite(ctx, t, l)
	defer heal()
	waitCloudHealth(t, hubs{s2.Name: hs[s2.Name]}, false, hubNotices)
	t.Logf("%s's YurtHub serves from its cache %v after the cut", s2.Name, time.Since(cutAt).Round(100*time.Millisecond))
	if err := l.Reboot(ctx, s2); err != nil {
		t.Fatal(err)
	}
	hs[s2.Name].Kill()
	if err := hs[s2.Name].StartCutOff(ctx); err != nil {
		t.Fatal(err)
	}
	start, p3, p4 := s.restartRebooted(ctx, t, oldP3)
	s.checkRebootedPaths(t, p3, p4)
	code, body, err := s2.AgentGet("/readyz")
	t.Logf("%s: /readyz during the cut: %d %q %v", s2.Name, code, body, err)
	// The rest of the cut, at least until YurtHub serves the agent from its cache: then the
	// agent's informers sync from that cache, whose EndpointSlice names p3's old address.
	rest := cutDuration(t) - time.Since(cutAt)
	if min := 40*time.Second - time.Since(start); rest < min {
		rest = min
	}
	time.Sleep(rest)
	code, body, err = s2.AgentGet("/readyz")
	t.Logf("%s: /readyz %v after the agent's start, %v into the cut: %d %q %v", s2.Name, time.Since(start).Round(time.Second),
		time.Since(cutAt).Round(time.Second), code, body, err)
	streamCtx, stopStream := context.WithTimeout(ctx, 3*time.Second)
	st, err := lab.UDPStream(streamCtx, p4.Netns, s.web, 2*time.Millisecond, 500*time.Millisecond)
	stopStream()
	if err != nil || len(st.Lost) > 0 || st.Received == 0 {
		t.Errorf("2 ms stream p4 -> web at the end of the cut: %v %v; Services in %s's maps: %s", st, err, s2.Name, s.dump(t, s2)["services"])
	} else {
		t.Logf("2 ms stream p4 -> web at the end of the cut: %v", st)
	}

	heal()
	setPodIP(t, l, "p3", p3.IP)
	healAt := time.Now()
	if err := waitEcho(s.p1.Netns, s.web, hubNotices); err != nil {
		t.Errorf("after the heal: p1 -> web (s1's maps with p3's new address): %v", err)
	} else {
		t.Logf("after the heal: p1 -> web answers from the new p3 %v after the heal", time.Since(healAt).Round(time.Millisecond))
	}
	if err := waitEcho(p4.Netns, s.web, hubNotices); err != nil {
		t.Errorf("after the heal: p4 -> web: %v", err)
	} else {
		t.Logf("after the heal: p4 -> web answers %v after the heal", time.Since(healAt).Round(time.Millisecond))
	}
}
