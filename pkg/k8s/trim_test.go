package k8s

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// TrimForCache drops what no reconciler reads and keeps, field for field, what they do.
func TestTrimForCache(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply,
		FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{}}`)}}}
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: "a", Namespace: "ns", ManagedFields: managed, Labels: map[string]string{"l": "v"},
			Annotations: map[string]string{lastApplied: `{"big":"object"}`, "openyurt.io/topologyKeys": "openyurt.io/nodepool"}}
	}
	trimmedMeta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: "a", Namespace: "ns", Labels: map[string]string{"l": "v"},
			Annotations: map[string]string{"openyurt.io/topologyKeys": "openyurt.io/nodepool"}}
	}

	svc := &corev1.Service{ObjectMeta: meta(), Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10",
		Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}}}}
	want := svc.DeepCopy()
	want.ObjectMeta = trimmedMeta()
	got, err := TrimForCache(svc)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("service: got %+v, %v; want %+v", got, err, want)
	}

	slice := &discoveryv1.EndpointSlice{ObjectMeta: meta(), AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080)}},
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.1.7"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To("node-1"), Zone: ptr.To("z1"),
			Hints:    &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z1"}}},
			Hostname: ptr.To("web-0"), DeprecatedTopology: map[string]string{"k": "v"},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-0"},
		}}}
	wantSlice := slice.DeepCopy()
	wantSlice.ObjectMeta = trimmedMeta()
	wantSlice.Endpoints[0].Hostname, wantSlice.Endpoints[0].DeprecatedTopology, wantSlice.Endpoints[0].TargetRef = nil, nil, nil
	if got, err := TrimForCache(slice); err != nil || !reflect.DeepEqual(got, wantSlice) {
		t.Errorf("endpointslice: got %+v, %v; want %+v", got, err, wantSlice)
	}

	node := &corev1.Node{ObjectMeta: meta(), Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.30.0.11"}},
			Images:    []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1 << 20}},
		}}
	wantNode := node.DeepCopy()
	wantNode.ObjectMeta = trimmedMeta()
	wantNode.Status.Images = nil
	if got, err := TrimForCache(node); err != nil || !reflect.DeepEqual(got, wantNode) {
		t.Errorf("node: got %+v, %v; want %+v", got, err, wantNode)
	}

	// A tombstone is not an object: it passes as it is.
	tomb := cache.DeletedFinalStateUnknown{Key: "ns/a", Obj: svc}
	if got, err := TrimForCache(tomb); err != nil || !reflect.DeepEqual(got, tomb) {
		t.Errorf("tombstone: got %+v, %v", got, err)
	}
}
