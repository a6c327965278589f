package service

import (
	"fmt"
	"iter"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// The cluster of the tests: this node "self" in pool-a and zone z1, with one endpoint per node.
//
//	node  pool    zone  endpoint
//	self  pool-a  z1    10.244.0.5
//	n2    pool-a  z2    10.244.1.5
//	n3    pool-b  z1    10.244.2.5
//	n4    -       -     10.244.3.5
func testNodes() iter.Seq2[string, labels.Labels] {
	return nodeLabels(map[string]labels.Set{
		"self": {domain.DefaultPoolLabel: "pool-a", ZoneLabel: "z1"},
		"n2":   {domain.DefaultPoolLabel: "pool-a", ZoneLabel: "z2"},
		"n3":   {domain.DefaultPoolLabel: "pool-b", ZoneLabel: "z1"},
		"n4":   {},
	})
}

// nodeLabels is NewCluster's nodes from their labels by name.
func nodeLabels(nodes map[string]labels.Set) iter.Seq2[string, labels.Labels] {
	return func(yield func(string, labels.Labels) bool) {
		for name, l := range nodes {
			if !yield(name, l) {
				return
			}
		}
	}
}

var (
	epSelf = ep("10.244.0.5", "self", "z1")
	epN2   = ep("10.244.1.5", "n2", "z2")
	epN3   = ep("10.244.2.5", "n3", "z1")
	epN4   = ep("10.244.3.5", "n4", "")
)

// hint gives e the EndpointSlice controller's zone hints.
func hint(e api.Endpoint, zones ...string) api.Endpoint {
	e.Hints = &api.EndpointHints{}
	for _, z := range zones {
		e.Hints.ForZones = append(e.Hints.ForZones, api.ForZone{Name: z})
	}
	return e
}

func ep(ip, node, zone string) api.Endpoint {
	e := api.Endpoint{Addresses: []string{ip}, NodeName: ptr.To(node)}
	if zone != "" {
		e.Zone = ptr.To(zone)
	}
	return e
}

// notReady, terminating... set an endpoint's conditions.
func conditions(e api.Endpoint, ready, serving, terminating bool) api.Endpoint {
	e.Conditions = api.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
	return e
}

type port struct {
	name  string
	proto api.Protocol
	num   int32
}

func slice(ports []port, eps ...api.Endpoint) *api.EndpointSlice {
	s := &api.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-x", Labels: map[string]string{api.LabelServiceName: "web"}},
		AddressType: api.AddressTypeIPv4,
		Endpoints:   eps,
	}
	for _, p := range ports {
		s.Ports = append(s.Ports, api.EndpointPort{Name: ptr.To(p.name), Protocol: ptr.To(p.proto), Port: ptr.To(p.num)})
	}
	return s
}

var httpPort = []port{{"http", api.ProtocolTCP, 8080}}

func allSlices() []*api.EndpointSlice {
	return []*api.EndpointSlice{slice(httpPort, epSelf, epN2, epN3, epN4)}
}

func clusterIPService(mods ...func(*api.Service)) *api.Service {
	s := &api.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: api.ServiceSpec{
			Type: api.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []api.ServicePort{{Name: "http", Protocol: api.ProtocolTCP, Port: 80}},
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func nodePortType(s *api.Service) {
	s.Spec.Type = api.ServiceTypeNodePort
	s.Spec.Ports[0].NodePort = 30080
}

func loadBalancerType(s *api.Service) {
	nodePortType(s)
	s.Spec.Type = api.ServiceTypeLoadBalancer
	s.Status.LoadBalancer.Ingress = []api.LoadBalancerIngress{{IP: "203.0.113.10"}}
}

func annotate(k, v string) func(*api.Service) {
	return func(s *api.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

// want describes frontends compactly: "scope vip:port/proto" -> "flags | backend,backend".
type want map[string]string

func describe(res Result) want {
	out := want{}
	for k, f := range res.Frontends {
		var b []string
		for _, be := range f.Backends {
			b = append(b, be.String())
		}
		v := f.Flags.String()
		if f.Flags&FlagAffinity != 0 {
			v += fmt.Sprintf("(%d)", f.AffinityTimeout)
		}
		out[k.String()] = v + " | " + strings.Join(b, ",")
	}
	return out
}

const (
	all4        = "10.244.0.5:8080,10.244.1.5:8080,10.244.2.5:8080,10.244.3.5:8080"
	selfEP      = "10.244.0.5:8080"
	clusterIP80 = "internal 10.96.0.10:80/tcp"
	nodePort    = "external 0.0.0.0:30080/tcp"
)

// frontendCase is one case of the Frontends tables (TestFrontends, TestFrontendsTopology,
// TestFrontendsNodePortIsolation, TestFrontendsWarnings): a Service and its slices as this node
// sees them, and the frontends and warnings the model gives.
type frontendCase struct {
	name     string
	svc      *api.Service
	slices   []*api.EndpointSlice // nil: allSlices
	policy   *Policy              // nil: read from the Service
	local    string               // this node; default self
	max      int
	want     want
	warnings []string // substrings, in order
}

// runFrontendCases runs each case as a subtest: exactly its frontends, exactly its warnings.
func runFrontendCases(t *testing.T, cases []frontendCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			local := c.local
			if local == "" {
				local = "self"
			}
			endpointSlices := c.slices
			if endpointSlices == nil {
				endpointSlices = allSlices()
			}
			policy := Policy{}
			if c.policy != nil {
				policy = *c.policy
			} else {
				var err error
				policy.Topology, err = TopologyOf(c.svc)
				if err != nil {
					t.Fatal(err)
				}
				if policy.Listen, err = ListenOf(c.svc); err != nil {
					t.Fatal(err)
				}
			}
			res, err := Frontends(Input{Service: c.svc, Slices: endpointSlices, Cluster: NewCluster(local, testNodes(), domain.DefaultPoolLabel), Policy: policy, MaxBackends: c.max})
			if err != nil {
				t.Fatal(err)
			}
			got := describe(res)
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for k, v := range got {
				if _, ok := c.want[k]; !ok {
					t.Errorf("unexpected %s = %q", k, v)
				}
			}
			if len(res.Warnings) != len(c.warnings) {
				t.Fatalf("warnings %v, want %d", res.Warnings, len(c.warnings))
			}
			for i, w := range c.warnings {
				if !strings.Contains(res.Warnings[i].Message, w) {
					t.Errorf("warning %d = %q, want %q", i, res.Warnings[i].Message, w)
				}
			}
		})
	}
}
