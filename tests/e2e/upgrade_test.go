package e2e

import (
	"context"
	"maps"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// upgradeVersion is what the second agent build says it is.
const upgradeVersion = "e2e-upgrade"

// TestUpgradeNoLoss: with UDP echo streams running (same node and across nodes), the agents of
// both nodes are upgraded one after the other, as a DaemonSet RollingUpdate does: stopped with
// SIGTERM and replaced by another build (a different -X main.version). Not one datagram is lost;
// every pinned tcx link (NIC, VXLAN device, pod veths) is the same kernel link, now running a newly
// loaded program (link.Update in place); every pinned map is the same kernel map (adopted), and the
// endpoint and route entries are unchanged.
func TestUpgradeNoLoss(t *testing.T) {
	sharedLab(t)
	ctx := t.Context()
	newAgent := buildAgent(t, upgradeVersion)
	upgraded := []*lab.Node{shared.nodes[0], shared.nodes[1]}
	src := shared.pods[0]                              // pod-1a
	dsts := []*lab.Pod{shared.pods[1], shared.pods[2]} // pod-1b (same node), pod-2a (remote)

	before := map[*lab.Node]datapathState{}
	for _, n := range upgraded {
		before[n] = readDatapathState(t, n)
	}
	lossless(t, src, dsts, 9100, "the upgrade", func() {
		for _, n := range upgraded {
			// Back to the lab's build afterwards, for the tests that follow.
			t.Cleanup(func() {
				n.AgentBinary = ""
				if err := n.RestartAgent(context.Background(), n.ExtraArgs, 15*time.Second); err != nil {
					t.Errorf("restoring the agent build on %s: %v", n.Name, err)
				}
			})
			n.AgentBinary = newAgent
			start := time.Now()
			if err := n.RestartAgent(ctx, n.ExtraArgs, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s upgraded (SIGTERM, new build started, node.json rewritten) in %v", n.Name, time.Since(start).Round(time.Millisecond))
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(time.Second)
	})

	for _, n := range upgraded {
		if log := lab.TailFile(n.Agent.LogPath, 1000); !strings.Contains(log, `version="`+upgradeVersion+`"`) {
			t.Errorf("the agent on %s does not say it is version %s; log:\n%s", n.Name, upgradeVersion, n.Agent.LogTail(20))
		}
		b, a := before[n], readDatapathState(t, n)
		if !maps.Equal(keysSet(b.links), keysSet(a.links)) {
			t.Errorf("%s: pinned links %v before the upgrade, %v after", n.Name, keys(b.links), keys(a.links))
		}
		for name, bl := range b.links {
			al, ok := a.links[name]
			switch {
			case !ok:
			case al.ID != bl.ID:
				t.Errorf("%s: link %s is link %d, was %d: not updated in place", n.Name, name, al.ID, bl.ID)
			case al.Program == bl.Program:
				t.Errorf("%s: link %s still runs program %d: the new build's program was not attached", n.Name, name, al.Program)
			default:
				t.Logf("%s: link %s (id %d): program %d -> %d", n.Name, name, al.ID, bl.Program, al.Program)
			}
		}
		if !maps.Equal(b.maps, a.maps) {
			t.Errorf("%s: pinned map IDs changed (not adopted):\nbefore %v\nafter  %v", n.Name, b.maps, a.maps)
		} else {
			t.Logf("%s: %d pinned maps adopted with the same IDs: %v", n.Name, len(a.maps), a.maps)
		}
		if !maps.Equal(b.endpoints, a.endpoints) {
			t.Errorf("%s: endpoints_map changed across the upgrade:\nbefore %v\nafter  %v", n.Name, b.endpoints, a.endpoints)
		}
		if !maps.Equal(b.routes, a.routes) {
			t.Errorf("%s: routes_map changed across the upgrade:\nbefore %v\nafter  %v", n.Name, b.routes, a.routes)
		}
		t.Logf("%s: %d endpoints and %d routes unchanged", n.Name, len(a.endpoints), len(a.routes))
	}
}

// datapathState is what an upgrade must keep (links, maps and their entries) or change (programs).
type datapathState struct {
	links     map[string]lab.PinnedLink
	maps      map[string]ebpf.MapID
	endpoints map[netip.Addr]lab.Endpoint
	routes    map[netip.Prefix]lab.Route
}

func readDatapathState(t *testing.T, n *lab.Node) datapathState {
	t.Helper()
	var s datapathState
	var err error
	if s.links, err = n.PinnedLinks(); err != nil {
		t.Fatal(err)
	}
	if s.maps, err = n.PinnedMapIDs(); err != nil {
		t.Fatal(err)
	}
	if s.endpoints, err = n.Endpoints(); err != nil {
		t.Fatal(err)
	}
	if s.routes, err = n.Routes(); err != nil {
		t.Fatal(err)
	}
	return s
}

// buildAgent builds edgeplane-agent from this source tree with another version string.
func buildAgent(t *testing.T, version string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building a second agent for the upgrade needs the go toolchain: %v", err)
	}
	out := filepath.Join(t.TempDir(), "edgeplane-agent")
	start := time.Now()
	build := exec.CommandContext(t.Context(), goBin, "build", "-ldflags", "-X main.version="+version, "-o", out,
		"github.com/edgeplane/edgeplane/cmd/edgeplane-agent")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	got, err := exec.CommandContext(t.Context(), out, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(got), version) {
		t.Fatalf("%s --version: %q, %v; want %s", out, got, err, version)
	}
	t.Logf("built edgeplane-agent %s in %v", version, time.Since(start).Round(time.Millisecond))
	return out
}

func keysSet[K comparable, V any](m map[K]V) map[K]bool {
	out := make(map[K]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
