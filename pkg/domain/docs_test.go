package domain

import (
	"os"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// docExamples are the configurations docs/domains.md shows: each ```yaml block, split at "---";
// a ConfigMap is replaced by its config.yaml.
func docExamples(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/domains.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, block := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		for _, part := range strings.Split(block[1], "\n---\n") {
			if strings.HasPrefix(part, "apiVersion:") {
				var cm corev1.ConfigMap
				if err := yaml.Unmarshal([]byte(part), &cm); err != nil {
					t.Fatalf("the ConfigMap example: %v", err)
				}
				part = cm.Data[ConfigKey]
			}
			out = append(out, part)
		}
	}
	return out
}

// Every configuration the docs show is valid, and the route-mode example does what its comment says.
func TestDocExamples(t *testing.T) {
	examples := docExamples(t)
	var site *Model
	for _, ex := range examples {
		m, err := Parse([]byte(ex))
		if err != nil {
			t.Fatalf("docs/domains.md example does not parse: %v\n%s", err, ex)
		}
		if len(m.RouteDomains()) > 0 {
			site = m
		}
	}
	if len(examples) < 5 || site == nil {
		t.Fatalf("%d examples, route mode among them: %t", len(examples), site != nil)
	}
	a1 := map[string]string{DefaultPoolLabel: "site-a", "edgeplane.io/bgp-speaker": "true", "topology.edgeplane.io/segment": "1"}
	v := site.NodeRouting(labels.Set(a1))
	if v.Domain != "site-a" || v.Encapsulation != Route || !v.Speaker || len(v.Peers) != 1 {
		t.Fatalf("a1's view: %+v", v)
	}
	const logged = "172.31.0.1:179 AS65000 local AS64512 hold 30s graceful-restart 5m0s password secret site-a-bgp/password"
	if got := v.Peers[0].String(); got != logged {
		t.Errorf("peer %q, the docs show %q", got, logged)
	}
	if v := site.NodeRouting(labels.Set(map[string]string{DefaultPoolLabel: "site-a"})); v.Speaker || v.Encapsulation != Route {
		t.Errorf("an unlabelled site-a node: %+v", v)
	}
	if !site.Reachable("cloud", "site-a") || site.Encapsulation("cloud") != VXLAN {
		t.Error("the example's cloud")
	}
}
