package agent

import (
	"context"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/maps/lb"
)

// testService is a NodePort Service with one ready endpoint, as the agent test's API server holds it.
func testService() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}},
		},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.7"}, NodeName: ptr.To("b")}},
	}
	return svc, slice
}

// checkServices waits until lb_svc_map holds exactly want (frontend -> backends) and returns each
// frontend's backend set id.
func checkServices(t *testing.T, root string, want map[string]string) map[string]uint32 {
	t.Helper()
	svcMap, err := lb.OpenSvc(root)
	if err != nil {
		t.Fatal(err)
	}
	defer svcMap.Close()
	backends, err := lb.OpenBackend(root)
	if err != nil {
		t.Fatal(err)
	}
	defer backends.Close()
	var got map[string]string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = map[string]string{}
		ids := map[string]uint32{}
		entries, err := svcMap.List()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range entries {
			var b []string
			for slot := range uint32(v.Count) {
				be, err := backends.Lookup(lb.BackendKey{SvcID: v.ID, Slot: slot})
				if err != nil {
					t.Fatal(err)
				}
				b = append(b, be.String())
			}
			slices.Sort(b)
			got[k.String()] = lb.FlagString(v.Flags) + " " + strings.Join(b, ",")
			ids[k.String()] = v.ID
		}
		if len(got) == len(want) && !slices.ContainsFunc(slices.Collect(func(yield func(string) bool) {
			for k := range want {
				if !yield(k) {
					return
				}
			}
		}), func(k string) bool { return got[k] != want[k] }) {
			return ids
		}
	}
	t.Fatalf("lb_svc_map = %v; want %v", got, want)
	return nil
}

// checkServiceRoute checks the route that takes host traffic to ClusterIPs through the device.
func checkServiceRoute(t *testing.T, device string) {
	t.Helper()
	r, err := netlink.RouteGet(net.ParseIP("10.96.0.10"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName(device)
	if err != nil {
		t.Fatal(err)
	}
	if r[0].LinkIndex != l.Attrs().Index || !r[0].Src.Equal(net.ParseIP("10.244.1.0")) {
		t.Fatalf("10.96.0.10 routes via ifindex %d from %s; want %s from 10.244.1.0", r[0].LinkIndex, r[0].Src, device)
	}
}

// TestGCPolicyOurs: the agent sets its GC pace unless the environment sets GOGC or GOMEMLIMIT.
func TestGCPolicyOurs(t *testing.T) {
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Setenv(v, "") // restored after the test
		os.Unsetenv(v)
	}
	if !gcPolicyOurs() {
		t.Error("neither GOGC nor GOMEMLIMIT set: the agent's policy should apply")
	}
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		t.Setenv(v, "off")
		if gcPolicyOurs() {
			t.Errorf("%s set: the agent's policy applied", v)
		}
		os.Unsetenv(v)
	}
}

// After a collection of the runtime's own, the free heap goes back to the system: a forced
// collection and a scavenge (what debug.FreeOSMemory does), and not again before the period.
func TestReleaseAfterCollections(t *testing.T) {
	samples := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}, {Name: "/gc/cycles/automatic:gc-cycles"}}
	read := func() (forced, automatic uint64) {
		metrics.Read(samples)
		return samples[0].Value.Uint64(), samples[1].Value.Uint64()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); releaseAfterCollections(ctx, 3*time.Second) }()
	defer func() { cancel(); <-done }()

	time.Sleep(1500 * time.Millisecond) // no collection yet: nothing to release
	forced0, _ := read()
	var sink [][]byte
	for _, automatic0 := read(); ; {
		sink = append(sink, make([]byte, 64<<10)) // garbage until the runtime collects
		if len(sink) > 64 {
			sink = sink[:0]
		}
		if _, a := read(); a > automatic0 {
			break
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for forced, _ := read(); forced == forced0; forced, _ = read() {
		if time.Now().After(deadline) {
			t.Fatal("no release within 5 s of a collection")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A forced collection is not the runtime's own: none follows it (nor could one, within the
	// period of the last).
	forced1, _ := read()
	runtime.GC() // a forced one does not count
	time.Sleep(1500 * time.Millisecond)
	if forced, _ := read(); forced != forced1+1 {
		t.Errorf("%d forced collections after runtime.GC, want only that one", forced-forced1)
	}
}
