package domains

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/service"
	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	reporterLease = "edgeplane-agent-reporter" // the agent's --reporter-lease default, in its namespace
	leaseDuration = 6 * time.Second            // --reporter-lease-duration, shorter than the default 15 s
)

// TestAgentReporting (issue 12, items 6 and 13) on three agents: each logs at start which domain
// configuration is in effect and where it came from; one bad edit of the domain ConfigMap and one
// bad Service annotation make exactly one event each (not one per agent), though every agent logs
// them; and when the agent that recorded them dies, another takes over within about a lease
// duration and records the problems still present.
func TestAgentReporting(t *testing.T) {
	l := lab.NewForTest(t, lab.ConfigForTest(t), &labs)
	ctx := t.Context()
	var nodes []*lab.Node
	for i := 1; i <= 3; i++ {
		n, err := l.AddNode(ctx, fmt.Sprintf("r%d", i), i, lab.NodeOptions{
			AgentArgs: []string{"--reporter-lease-duration=" + leaseDuration.String()},
		})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	cms := l.Client.CoreV1().ConfigMaps(lab.AgentNamespace)

	t.Run("domain-config-in-effect-logged", func(t *testing.T) {
		for _, n := range nodes {
			waitLogContains(t, n, `"Domain ConfigMap not found: every pool is its own domain, all pairs public (default)" configmap="edgeplane-system/edgeplane-domains"`, 1)
		}
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cmName, Namespace: lab.AgentNamespace},
			Data: map[string]string{domain.ConfigKey: privateLine}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := nodes[0].RestartAgent(ctx, nodes[0].ExtraArgs, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		waitLogContains(t, nodes[0], fmt.Sprintf(`"Domain configuration in effect" configmap="edgeplane-system/edgeplane-domains" resourceVersion=%q`, cm.ResourceVersion), 1)
	})

	holder := waitHolder(t, l, nodes, "")
	t.Logf("reporter: %s", holder.Name)
	cm, err := cms.Get(ctx, cmName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{domain.ConfigKey: "connectivity:\n- domains: [cloud, site-a]\n  mode: privat\n"}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bad-topology", Namespace: lab.PodNamespace,
			Annotations: map[string]string{service.TopologyAnnotation: "rack"}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	if _, err := l.Client.CoreV1().Services(lab.PodNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	problems := []problem{
		{lab.AgentNamespace, cmName, controller.ReasonInvalidDomainConfig},
		{lab.PodNamespace, svc.Name, controller.ReasonInvalidServiceAnnotation},
	}

	t.Run("one-event-per-problem", func(t *testing.T) {
		// Every agent sees and logs both problems ...
		for _, n := range nodes {
			waitLogContains(t, n, "Ignoring the domain configuration; keeping the last valid one", 1)
			waitLogContains(t, n, `"Service problem" service="default/bad-topology" reason="InvalidServiceAnnotation"`, 1)
		}
		// ... the events are written asynchronously: give them time to arrive (all of them).
		time.Sleep(3 * time.Second)
		for _, p := range problems {
			evs := p.events(t, l)
			var count int32
			for _, e := range evs {
				count += e.Count
			}
			if len(evs) != 1 || count != 1 {
				t.Errorf("%s: %d events, counts summing to %d, want exactly one:\n%s", p, len(evs), count, describe(evs))
			} else if evs[0].Source.Host != holder.Name {
				t.Errorf("%s: recorded by %s, want the Lease holder %s", p, evs[0].Source.Host, holder.Name)
			}
		}
	})

	t.Run("reporter-hand-over", func(t *testing.T) {
		killed := time.Now()
		holder.KillAgent() // SIGKILL: the Lease is not released, it expires
		next := waitHolder(t, l, nodes, holder.Name)
		took := time.Since(killed)
		for _, p := range problems {
			deadline := time.Now().Add(leaseDuration)
			for {
				evs := p.events(t, l)
				if slices.ContainsFunc(evs, func(e corev1.Event) bool { return e.Source.Host == next.Name }) {
					if len(evs) != 2 {
						t.Errorf("%s after the hand-over: %d events, want the old reporter's and the new one's:\n%s", p, len(evs), describe(evs))
					}
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s: the new reporter %s did not record it again:\n%s", p, next.Name, describe(evs))
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		t.Logf("reporter %s killed; %s took the Lease after %v (lease duration %v)", holder.Name, next.Name, took.Round(time.Millisecond), leaseDuration)
		if took > 2*leaseDuration {
			t.Errorf("hand-over took %v, want within about a lease duration (%v)", took, leaseDuration)
		}
	})
}

// problem is a Warning event's object and reason.
type problem struct{ namespace, name, reason string }

func (p problem) String() string { return p.reason + " on " + p.namespace + "/" + p.name }

func (p problem) events(t *testing.T, l *lab.Lab) []corev1.Event {
	t.Helper()
	list, err := l.Client.CoreV1().Events(p.namespace).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == p.name && e.Reason == p.reason {
			out = append(out, e)
		}
	}
	return out
}

func describe(evs []corev1.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s from %s count %d: %s\n", e.Name, e.Source.Host, e.Count, e.Message)
	}
	return b.String()
}

// waitHolder waits until the reporter Lease names a running agent other than not, and returns
// its node.
func waitHolder(t *testing.T, l *lab.Lab, nodes []*lab.Node, not string) *lab.Node {
	t.Helper()
	deadline := time.Now().Add(3 * leaseDuration)
	for time.Now().Before(deadline) {
		lease, err := l.Client.CoordinationV1().Leases(lab.AgentNamespace).Get(t.Context(), reporterLease, metav1.GetOptions{})
		if err == nil && lease.Spec.HolderIdentity != nil {
			for _, n := range nodes {
				if n.Name == *lease.Spec.HolderIdentity && n.Name != not {
					return n
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no agent (other than %q) took the reporter Lease %s/%s within %v", not, lab.AgentNamespace, reporterLease, 3*leaseDuration)
	return nil
}
