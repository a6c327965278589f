package service

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// TestParseListen is the grammar of nodeport.openyurt.io/listen: which pools listen.
func TestParseListen(t *testing.T) {
	pools := []string{"pool-a", "pool-b", "pool-c"}
	for _, c := range []struct {
		value  string
		listen []string // pools that listen
		err    string
	}{
		{value: "pool-a", listen: []string{"pool-a"}},
		{value: "pool-a,pool-b", listen: []string{"pool-a", "pool-b"}},
		{value: "pool-a,-pool-b", listen: []string{"pool-a"}},
		{value: "-pool-a", listen: nil}, // not listed: disabled anyway
		{value: "*", listen: pools},
		{value: "-pool-a,*", listen: []string{"pool-b", "pool-c"}},
		{value: "*,-pool-a", listen: []string{"pool-b", "pool-c"}}, // a named pool beats * wherever it stands
		{value: "pool-a,-pool-a", listen: []string{"pool-a"}},      // the first mention wins
		{value: "-pool-a,pool-a,*", listen: []string{"pool-b", "pool-c"}},
		{value: "*,-*", listen: pools},
		{value: "-*,*", listen: nil},
		{value: "-*,pool-b", listen: []string{"pool-b"}},
		{value: " pool-a , -pool-b ,\t*", listen: []string{"pool-a", "pool-c"}}, // spaces around items
		{value: "", listen: nil},                                                // no pool listed: none listens
		{value: " ", err: "item 1 is empty"},
		{value: "pool-a,", err: "item 2 is empty"},
		{value: "pool-a,,pool-b", err: "item 2 is empty"},
		{value: ",pool-a", err: "item 1 is empty"},
		{value: "pool-a,-", err: `item 2 "-" names no pool`},
		{value: "pool a", err: `item 1 "pool a": "pool a" is not a node pool name`},
		{value: "pool-a;pool-b", err: "is not a node pool name"},
		{value: "--pool-a", err: `"-pool-a" is not a node pool name`},
		{value: "pool-a,-pool-", err: `"pool-" is not a node pool name`},
		{value: strings.Repeat("a", 64), err: "is not a node pool name"},
		{value: "pool/a", err: "is not a node pool name"},
	} {
		t.Run(c.value, func(t *testing.T) {
			l, err := ParseListen(c.value)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				if !l.Equal(ListenNowhere) {
					t.Errorf("an invalid value parses to %v, want nowhere", l)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pools {
				if l.Listening(p) {
					got = append(got, p)
				}
			}
			if strings.Join(got, ",") != strings.Join(c.listen, ",") {
				t.Errorf("listening pools %v, want %v (rule %s)", got, c.listen, l)
			}
			if !l.Listening("") {
				t.Error("a node in no pool does not listen")
			}
		})
	}
}

func TestListenOf(t *testing.T) {
	svc := &api.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s"}}
	l, err := ListenOf(svc)
	if err != nil || l.Set() || !l.Listening("pool-a") {
		t.Fatalf("no annotation: %v %v", l, err)
	}
	svc.Annotations = map[string]string{ListenAnnotation: "pool-a,,b"}
	l, err = ListenOf(svc)
	if err == nil || !strings.Contains(err.Error(), `nodeport.openyurt.io/listen="pool-a,,b": item 2 is empty`) {
		t.Fatalf("error %v", err)
	}
	if l.Listening("pool-a") || !l.Listening("") {
		t.Errorf("an invalid annotation reads as %v, want only nodes in no pool", l)
	}
	if got := ListenEverywhere.String() + " " + ListenNowhere.String() + " " + (Listen{}).String(); got != "*  <all nodes>" {
		t.Errorf("strings %q", got)
	}
	a, _ := ParseListen("-b,a,*")
	if a.String() != "*,a,-b" || !a.Equal(func() Listen { l, _ := ParseListen("*, a, -b, b"); return l }()) {
		t.Errorf("%v", a)
	}
}

func TestTopologyOf(t *testing.T) {
	for value, want := range map[string]Topology{
		"": TopologyNone, "kubernetes.io/hostname": TopologyNode, "openyurt.io/nodepool": TopologyPool,
		"kubernetes.io/zone": TopologyPool, " openyurt.io/nodepool ": TopologyPool,
	} {
		svc := &api.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{TopologyAnnotation: value}}}
		if got, err := TopologyOf(svc); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", value, got, err, want)
		}
	}
	svc := &api.Service{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{TopologyAnnotation: "topology.kubernetes.io/zone"}}}
	if _, err := TopologyOf(svc); err == nil || !strings.Contains(err.Error(), "want kubernetes.io/hostname") {
		t.Errorf("unknown key: %v", err)
	}
	if got, err := TopologyOf(&api.Service{}); got != TopologyNone || err != nil {
		t.Errorf("no annotation: %v %v", got, err)
	}
}

func TestIgnored(t *testing.T) {
	for _, c := range []struct {
		svc     api.Service
		ignored bool
	}{
		{api.Service{Spec: api.ServiceSpec{ClusterIP: "10.96.0.1"}}, false},
		{api.Service{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{ProxyNameLabel: "other"}}}, true},
		{api.Service{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{ProxyNameLabel: ""}}}, true},
		{api.Service{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{ProxyNameLabel: ProxyName}}, Spec: api.ServiceSpec{ClusterIP: "10.96.0.1"}}, false},
		{api.Service{Spec: api.ServiceSpec{Type: api.ServiceTypeExternalName}}, true},
		{api.Service{Spec: api.ServiceSpec{ClusterIP: "None"}}, true},
	} {
		why, ignored := Ignored(&c.svc)
		if ignored != c.ignored {
			t.Errorf("%+v: ignored=%v (%s)", c.svc, ignored, why)
		}
	}
}
