package e2e

import (
	"reflect"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/agentinfo"
	"github.com/edgeplane/edgeplane/pkg/datapath"
)

// TestConfigShowsAgentReport: `edgeplanectl config -o json` on a lab node shows what its running
// agent wrote to the run dir (agent.json): the node's flags as the lab started the agent, and
// the kernel's release and features, which must be what the probes answer on this machine's
// kernel (the lab's nodes share it).
func TestConfigShowsAgentReport(t *testing.T) {
	l := sharedLab(t)
	node := shared.nodes[0]
	c := newCtl(t, l, node)
	var out struct {
		AgentJSON struct {
			Present bool
			Error   string
			Report  *agentinfo.Report
		}
	}
	c.json(t, &out, "config")
	r := out.AgentJSON.Report
	if !out.AgentJSON.Present || r == nil {
		t.Fatalf("config shows no agent report on %s: %+v", node.Name, out.AgentJSON)
	}
	f, err := datapath.KernelFeatures()
	if err != nil {
		t.Fatal(err)
	}
	if r.Node != node.Name || r.Flags["node-name"] != node.Name || r.Flags["run-dir"] != node.RunDir ||
		r.Flags["bpffs-root"] != node.BPFFS {
		t.Errorf("agent report on %s: node %q, flags %v", node.Name, r.Node, r.Flags)
	}
	if r.Kernel.Release != datapath.KernelRelease() || !reflect.DeepEqual(r.Kernel.Features, f.Describe()) {
		t.Errorf("agent report on %s: kernel %+v, want release %s features %+v", node.Name, r.Kernel, datapath.KernelRelease(), f.Describe())
	}
	t.Logf("%s: kernel %s, %d features, %d flags", node.Name, r.Kernel.Release, len(r.Kernel.Features), len(r.Flags))
}
