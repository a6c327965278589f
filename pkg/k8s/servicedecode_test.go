package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// bulkService is a Service as the scale lab's bulk ones, as the API server stores them: a
// ClusterIP, one port, a selector, kube-apiserver's defaults, managed fields.
func bulkService(i int) corev1.Service {
	ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
	return corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i), ResourceVersion: "7",
			UID: types.UID(fmt.Sprintf("0b5c1f9e-7d1a-4c7e-9a55-%012d", i)), CreationTimestamp: metav1.Unix(1700000000, 0),
			Labels: map[string]string{"app": "web"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "bench", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{}}`)}}}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			SessionAffinity: corev1.ServiceAffinityNone, InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
			Selector: map[string]string{"app": fmt.Sprintf("svc-%05d", i)},
			Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
}

// decodeServiceTestCases are Services with what Service keeps set in the ways that matter: the
// rare fields, the kept labels and annotations beside others, every kind of port, values outside
// the coded fields' tables, UIDs that are not the API server's, dual-stack and headless cluster
// IPs, no cluster IPs, an empty internal traffic policy, and nothing at all.
func decodeServiceTestCases() map[string]*corev1.Service {
	bulk := bulkService(3)
	rare := bulkService(4)
	rare.Labels = map[string]string{service.ProxyNameLabel: "other", "app": "x"}
	rare.Annotations = map[string]string{service.TopologyAnnotation: "openyurt.io/nodepool", service.ListenAnnotation: "pool-a",
		"kubectl.kubernetes.io/last-applied-configuration": "{}"}
	rare.Finalizers = []string{"service.kubernetes.io/load-balancer-cleanup"}
	rare.Spec.Type = corev1.ServiceTypeLoadBalancer
	rare.Spec.ClusterIPs = []string{rare.Spec.ClusterIP, "fd00::10"}
	rare.Spec.ExternalIPs = []string{"192.0.2.1", "192.0.2.2"}
	rare.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	rare.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
	rare.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	rare.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	rare.Spec.HealthCheckNodePort = 31000
	rare.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
	rare.Spec.LoadBalancerIP = "198.51.100.1"
	rare.Spec.Ports = append(rare.Spec.Ports,
		corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, NodePort: 30053, AppProtocol: ptr.To("dns")},
		corev1.ServicePort{Protocol: corev1.ProtocolSCTP, Port: 9, TargetPort: intstr.FromString("sctp")},
		corev1.ServicePort{Port: -1})
	rare.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
		{IP: "198.51.100.1", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy), Ports: []corev1.PortStatus{{Port: 80, Protocol: corev1.ProtocolTCP, Error: ptr.To("x")}}},
		{Hostname: "lb.example"}}
	rare.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "R"}}
	unknown := bulkService(5)
	unknown.UID = "0B5C1F9E-7D1A-4C7E-9A55-00000000002A"
	unknown.Spec.Type = "Tunnel"
	unknown.Spec.SessionAffinity = "Cookie"
	unknown.Spec.ExternalTrafficPolicy = "Nearest"
	unknown.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicy("Somewhere"))
	unknown.Spec.Ports[0].Protocol = "QUIC"
	emptyITP := bulkService(6)
	emptyITP.UID = "uid-6"
	emptyITP.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicy(""))
	emptyITP.CreationTimestamp = metav1.Time{}
	headless := bulkService(7)
	headless.Spec.ClusterIP, headless.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
	external := bulkService(8)
	external.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example"}
	otherIP := bulkService(9)
	otherIP.Spec.ClusterIPs = []string{"10.96.9.9"}
	return map[string]*corev1.Service{"bulk": &bulk, "rare": &rare, "unknown values": &unknown, "empty ITP": &emptyITP,
		"headless": &headless, "external name": &external, "other cluster IP": &otherIP, "empty": {}}
}

// TestServiceUnmarshalAsCompactService checks that Service.Unmarshal keeps of a Service message
// what serviceOf keeps of the corev1.Service the generated code decodes from it: single
// messages, messages that repeat fields (two encodings one after the other), and every cut of
// one (refused when the generated code refuses it).
func TestServiceUnmarshalAsCompactService(t *testing.T) {
	encoded := marshalAll(t, decodeServiceTestCases())
	checkAllAsGenerated(t, encoded, [][2]string{{"bulk", "rare"}, {"rare", "bulk"}, {"rare", "rare"}, {"unknown values", "empty ITP"},
		{"empty ITP", "unknown values"}, {"bulk", "headless"}, {"empty", "rare"}, {"rare", "empty"}}, serviceOf)
	checkCuts(t, encoded["rare"], serviceOf)
}

// A Service decoded by Unmarshal keeps none of the message's bytes: they may be reused.
func TestServiceUnmarshalCopiesWhatItKeeps(t *testing.T) {
	data, err := decodeServiceTestCases()["unknown values"].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rare, err := decodeServiceTestCases()["rare"].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, rare...)
	var s Service
	if err := s.Unmarshal(data); err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(s.Object()) // bytes of their own
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 'x'
	}
	var other Service // and the decoder's reused state is used again
	if err := other.Unmarshal(rare); err != nil {
		t.Fatal(err)
	}
	if got, err := json.Marshal(s.Object()); err != nil || !bytes.Equal(got, want) {
		t.Errorf("overwriting the message changed the decoded Service (%v)", err)
	}
}

// FuzzServiceUnmarshal: on any bytes, Unmarshal does not panic, and where both it and the
// generated code decode them it keeps what serviceOf keeps of the generated code's Service.
func FuzzServiceUnmarshal(f *testing.F) {
	for _, data := range marshalAll(f, decodeServiceTestCases()) {
		f.Add(data)
	}
	f.Add([]byte("0\xff\xff\xff\xff\xff\xff\xff\xff\xff0")) // a varint of 10 bytes whose last is over 1: the generated code drops the bits beyond 64
	f.Fuzz(func(t *testing.T, data []byte) { asGenerated(t, data, serviceOf) })
}
