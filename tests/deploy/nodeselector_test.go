package deploy

import (
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// agentNodeLabel is the label that puts edgeplane's DaemonSet on a node, so a cluster moves from
// Flannel node by node (docs/install.md).
const agentNodeLabel = "edgeplane.io/agent"

// TestDaemonSetOnlyOnLabelledNodes: the agent's DaemonSet selects nodes labelled
// edgeplane.io/agent=true (a kubectl apply does not roll it onto Flannel nodes), and install.md
// says how to label every node and how to keep Flannel's DaemonSet off labelled nodes.
func TestDaemonSetOnlyOnLabelledNodes(t *testing.T) {
	ds := typed[appsv1.DaemonSet](t, objects(t), "DaemonSet")
	if got := ds.Spec.Template.Spec.NodeSelector[agentNodeLabel]; got != "true" {
		t.Errorf("DaemonSet nodeSelector %v; want %s: \"true\"", ds.Spec.Template.Spec.NodeSelector, agentNodeLabel)
	}
	doc, err := os.ReadFile("../../docs/install.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"kubectl label nodes --all " + agentNodeLabel + "=true",
		"kubectl label node $NODE " + agentNodeLabel + "=true",
		`"value":{"key":"` + agentNodeLabel + `","operator":"DoesNotExist"}`,
		"## Moving from Flannel node by node",
	} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs/install.md does not say %q", want)
		}
	}
}
