package services

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// setZone labels a node with topology.kubernetes.io/zone; "" removes the label.
func (c *cluster) setZone(t *testing.T, node, zone string) {
	t.Helper()
	value := "null"
	if zone != "" {
		value = fmt.Sprintf("%q", zone)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, corev1.LabelTopologyZone, value)
	if _, err := c.lab.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) setTrafficDistribution(t *testing.T, svc, value string) {
	t.Helper()
	if _, err := c.lab.UpdateService(t.Context(), svc, func(s *corev1.Service) {
		s.Spec.TrafficDistribution = nil
		if value != "" {
			s.Spec.TrafficDistribution = &value
		}
	}); err != nil {
		t.Fatal(err)
	}
}

// testTrafficDistribution: n1 and n2 in zone-a, n3 in zone-b (topology.kubernetes.io/zone, removed
// again at the end). The real EndpointSlice controller writes each endpoint's zone from its node's
// label (and, for PreferClose, hints, which edgeplane does not need: docs/services.md); each agent
// keeps its own zone's ready endpoints, all of them when its zone has none, and for PreferSameNode
// its own node's first.
func testTrafficDistribution(t *testing.T, c *cluster) {
	zones := map[string]string{"n1": "zone-a", "n2": "zone-a", "n3": "zone-b"}
	for _, n := range c.nodes {
		c.setZone(t, n.Name, zones[n.Name])
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.setZone(t, n.Name, "")
		}
	})
	// The controller reads an endpoint's zone from its node cache when it writes the endpoint, so
	// the labels go on before the Service exists; the slices are checked below.
	svc := c.webService(t, "close", lab.ServiceOptions{TrafficDistribution: corev1.ServiceTrafficDistributionPreferClose})
	slices, err := c.lab.WaitEndpointSlices(t.Context(), "close", waitLimit, func(s []discoveryv1.EndpointSlice) error {
		for _, ep := range lab.SliceEndpoints(s) {
			if ep.NodeName == nil || ep.Zone == nil || *ep.Zone != zones[*ep.NodeName] {
				return fmt.Errorf("endpoint %v on %v has zone %v", ep.Addresses, ptrString(ep.NodeName), ptrString(ep.Zone))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var hints []string
	for _, ep := range lab.SliceEndpoints(slices) {
		h := "none"
		if ep.Hints != nil {
			var z []string
			for _, fz := range ep.Hints.ForZones {
				z = append(z, fz.Name)
			}
			h = strings.Join(z, ",")
		}
		hints = append(hints, fmt.Sprintf("%s zone=%s hints=%s", ep.Addresses[0], *ep.Zone, h))
	}
	t.Logf("EndpointSlice of close (PreferClose): %s", strings.Join(hints, "; "))

	zoneA, zoneB := exactly("web-n1", "web-n2"), exactly("web-n3")
	check := func(what string, want []func(map[string]int) bool) {
		t.Helper()
		var out []string
		for i, cl := range c.clients {
			m := answers(t, cl.Netns, corev1.ProtocolTCP, vip(svc, 80), 20, want[i])
			out = append(out, cl.Name+" "+lab.FormatCounts(m))
		}
		t.Logf("%s: %s", what, strings.Join(out, ", "))
	}
	check("PreferClose", []func(map[string]int) bool{zoneA, zoneA, zoneB})
	udp := answers(t, c.clients[2].Netns, corev1.ProtocolUDP, vip(svc, 53), 10, zoneB)
	host := answers(t, c.nodes[2].Netns, corev1.ProtocolTCP, vip(svc, 80), 10, zoneB)
	t.Logf("PreferClose: client-n3 UDP %s, n3 (host) TCP %s", lab.FormatCounts(udp), lab.FormatCounts(host))

	// zone-b loses its only ready backend: its clients fall back to every ready one.
	start := time.Now()
	if err := c.web[2].SetReady(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.web[2].SetReady(context.Background(), true) })
	check("PreferClose, web-n3 not ready", []func(map[string]int) bool{zoneA, zoneA, zoneA})
	t.Logf("zone-b fell back to zone-a's backends within %v", time.Since(start).Round(time.Millisecond))
	if err := c.web[2].SetReady(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	check("PreferClose, web-n3 ready again", []func(map[string]int) bool{zoneA, zoneA, zoneB})

	// PreferSameNode, live: this node's backend, else its zone's, else all.
	start = time.Now()
	c.setTrafficDistribution(t, "close", corev1.ServiceTrafficDistributionPreferSameNode)
	check("PreferSameNode", []func(map[string]int) bool{exactly("web-n1"), exactly("web-n2"), exactly("web-n3")})
	t.Logf("PreferClose -> PreferSameNode applied within %v", time.Since(start).Round(time.Millisecond))
	if err := c.web[0].SetReady(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.web[0].SetReady(context.Background(), true) })
	check("PreferSameNode, web-n1 not ready", []func(map[string]int) bool{exactly("web-n2"), exactly("web-n2"), exactly("web-n3")})
	if err := c.web[0].SetReady(t.Context(), true); err != nil {
		t.Fatal(err)
	}

	c.setTrafficDistribution(t, "close", corev1.ServiceTrafficDistributionPreferSameZone)
	check("PreferSameZone", []func(map[string]int) bool{zoneA, zoneA, zoneB})

	all := exactly("web-n1", "web-n2", "web-n3")
	c.setTrafficDistribution(t, "close", "")
	check("no trafficDistribution", []func(map[string]int) bool{all, all, all})
}

func ptrString(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}
