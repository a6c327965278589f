package k8s_test

import (
	"context"
	"net"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// An external test: k8stest imports this package.
func TestVTEPAnnotationsRoundTripAndPatch(t *testing.T) {
	mac, _ := net.ParseMAC("0e:01:02:03:04:05")
	want := k8s.VTEP{MAC: mac, IP: netip.MustParseAddr("192.168.0.7")}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{"keep": "me"}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.7"}}},
	}
	cs := fake.NewClientset(node)
	ctx := context.Background()
	if err := k8s.PatchNodeAnnotations(ctx, k8stest.FromClientset(cs), k8stest.Node(node), k8s.VTEPAnnotations(want)); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.CoreV1().Nodes().Get(ctx, "n", metav1.GetOptions{})
	v, err := k8s.NodeVTEP(k8stest.Node(got))
	if err != nil || v.MAC.String() != want.MAC.String() || v.IP != want.IP || got.Annotations["keep"] != "me" ||
		got.Annotations[k8s.KubeSubnetManagerAnnotation] != "true" {
		t.Fatalf("after patch: %v %v %v", v, err, got.Annotations)
	}
	cs.ClearActions()
	if err := k8s.PatchNodeAnnotations(ctx, k8stest.FromClientset(cs), k8stest.Node(got), k8s.VTEPAnnotations(want)); err != nil {
		t.Fatal(err)
	}
	for _, a := range cs.Actions() {
		if _, ok := a.(k8stesting.PatchAction); ok {
			t.Fatal("patched although the annotations were already there")
		}
	}
}
