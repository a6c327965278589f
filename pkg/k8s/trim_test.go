package k8s

import (
	"fmt"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
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

	created := metav1.Unix(1700000000, 0)
	svc := &corev1.Service{ObjectMeta: meta(), Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
		Selector: map[string]string{"app": "dns"}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
		Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353),
			NodePort: 30053, AppProtocol: ptr.To("dns")}},
		InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal),
		TrafficDistribution:   ptr.To(corev1.ServiceTrafficDistributionPreferSameZone)},
		Status: corev1.ServiceStatus{Conditions: []metav1.Condition{{Type: "x"}}}}
	svc.UID, svc.ResourceVersion, svc.CreationTimestamp = "u-1", "42", created
	svc.OwnerReferences = []metav1.OwnerReference{{Name: "o"}}
	svc.Labels[service.ProxyNameLabel] = "other"
	// What the model may read of the cached Service: the rebuilt object.
	want := &corev1.Service{ObjectMeta: trimmedMeta(), Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
		Ports:                 []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053}},
		InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal),
		TrafficDistribution:   ptr.To(corev1.ServiceTrafficDistributionPreferSameZone)}}
	want.Labels = map[string]string{service.ProxyNameLabel: "other"}
	want.UID, want.ResourceVersion, want.CreationTimestamp = "u-1", "42", created
	got, err := TrimForCache(toAPI(svc))
	cs, ok := got.(*Service)
	if err != nil || !ok {
		t.Fatalf("service: got %T, %v; want *Service", got, err)
	}
	wantAPI := toAPI(want)
	if obj := cs.Object(); !reflect.DeepEqual(obj, wantAPI) {
		t.Errorf("service: rebuilt %+v; want %+v", obj, wantAPI)
	}
	if obj := ServiceObject(cs); obj == cs.Object() || !reflect.DeepEqual(obj, wantAPI) {
		t.Errorf("ServiceObject: %+v; want a fresh %+v", obj, wantAPI)
	}
	// The rebuilt object is the caller's: changing it leaves the cache as it was.
	obj := cs.Object()
	obj.Labels["x"], obj.Spec.ClusterIPs[0], *obj.Spec.InternalTrafficPolicy = "y", "10.96.0.11", api.ServiceInternalTrafficPolicyCluster
	if again := cs.Object(); !reflect.DeepEqual(again, wantAPI) {
		t.Errorf("service after changing a rebuilt copy: %+v; want %+v", again, want)
	}
	if again, err := TrimForCache(cs); err != nil || again != cs {
		t.Errorf("a compact service trimmed again: got %+v, %v; want it unchanged", again, err)
	}
	if key, err := cache.MetaNamespaceKeyFunc(cs); err != nil || key != "ns/a" {
		t.Errorf("key of the compact service: %q, %v", key, err)
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
	slice.Labels[discoveryv1.LabelServiceName] = "web"
	gotSlice, err := TrimForCache(toAPI(slice))
	c, ok := gotSlice.(*EndpointSlice)
	if err != nil || !ok {
		t.Fatalf("endpointslice: got %T, %v; want *EndpointSlice", gotSlice, err)
	}
	wantSlice := &EndpointSlice{Namespace: "ns", Name: "a", ServiceName: "web", addressType: handleOf(string(discoveryv1.AddressTypeIPv4)),
		Ports: []SlicePort{newSlicePort("", "", 8080)},
		Endpoints: []SliceEndpoint{{Address: [4]byte{10, 244, 1, 7}, Ready: true, Serving: true,
			at: handleOf(placement{node: "node-1", zone: "z1", hints: "z1"})}}}
	if !reflect.DeepEqual(c, wantSlice) {
		t.Errorf("endpointslice: got %+v; want %+v", c, wantSlice)
	}
	if again, err := TrimForCache(c); err != nil || again != c {
		t.Errorf("a compact slice trimmed again: got %+v, %v; want it unchanged", again, err)
	}
	// client-go's store keys it by namespace and name.
	if key, err := cache.MetaNamespaceKeyFunc(c); err != nil || key != "ns/a" {
		t.Errorf("key of the compact slice: %q, %v", key, err)
	}

	node := fullNode()
	deleted := metav1.Unix(1700000100, 0)
	node.DeletionTimestamp = &deleted
	wantNode := &Node{Name: "n1", UID: "u-n1", ResourceVersion: "7", Deleting: true,
		Labels: NodeLabelsOf(node.Name, node.Labels), Annotations: KeyValuesOf(map[string]string{
			BackendTypeAnnotation: "vxlan", BackendDataAnnotation: `{"VNI":1,"VtepMAC":"02:00:00:00:00:0b"}`,
			PublicIPAnnotation: "172.30.0.11", PodCIDRAnnotation: "10.244.9.0/24", RoutesAdvertisedAnnotation: "site-a"}),
		Spec:   NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}, Taints: apiNode(node).Spec.Taints},
		Status: NodeStatus{Addresses: apiNode(node).Status.Addresses},
	}
	gotNode, err := TrimForCache(toAPI(node))
	if err != nil || !reflect.DeepEqual(gotNode, wantNode) {
		t.Errorf("node: got %+v, %v; want %+v", gotNode, err, wantNode)
	}
	if again, err := TrimForCache(gotNode); err != nil || again != gotNode {
		t.Errorf("a cached node trimmed again: got %+v, %v; want it unchanged", again, err)
	}
	if c := gotNode.(*Node).DeepCopy(); !reflect.DeepEqual(c, wantNode) {
		t.Errorf("a cached node's copy: %+v; want %+v", c, wantNode)
	}
	// client-go's store keys it by name, and a label selector reads its labels.
	if key, err := cache.MetaNamespaceKeyFunc(gotNode); err != nil || key != "n1" {
		t.Errorf("key of the cached node: %q, %v", key, err)
	}

	// A tombstone is not an object: it passes as it is.
	tomb := cache.DeletedFinalStateUnknown{Key: "ns/a", Obj: svc}
	if got, err := TrimForCache(tomb); err != nil || !reflect.DeepEqual(got, tomb) {
		t.Errorf("tombstone: got %+v, %v", got, err)
	}
}

// The model computes from the cached, trimmed objects what it computes from the full ones, for
// every condition, node, zone, port and address the tests of pkg/service vary.
func TestTrimmedModelEquivalence(t *testing.T) {
	nodes := []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "self", Labels: map[string]string{"apps.openyurt.io/nodepool": "a", corev1.LabelTopologyZone: "z1"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n2", Labels: map[string]string{"apps.openyurt.io/nodepool": "a", corev1.LabelTopologyZone: "z2"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n3", Labels: map[string]string{"apps.openyurt.io/nodepool": "b"}}},
	}
	cachedNodes := make([]*Node, len(nodes))
	for i, n := range nodes {
		cachedNodes[i] = nodeOf(n)
	}
	cluster := service.NewCluster("self", LabelsOfNodes(cachedNodes), "apps.openyurt.io/nodepool")
	bools := []*bool{nil, ptr.To(true), ptr.To(false)}
	var eps []discoveryv1.Endpoint
	i := 0
	for _, ready := range bools {
		for _, serving := range bools {
			for _, terminating := range bools {
				for _, node := range []*string{nil, ptr.To(""), ptr.To("self"), ptr.To("n2"), ptr.To("n3")} {
					i++
					var zone *string
					if i%3 == 1 {
						zone = ptr.To("z1")
					}
					// Zone hints on every endpoint, some with two zones: the model filters by them.
					hints := &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z2"}}}
					switch i % 5 {
					case 0:
						hints.ForZones = append(hints.ForZones, discoveryv1.ForZone{Name: "z1"})
					case 1:
						hints.ForZones[0].Name = "z1"
					}
					eps = append(eps, discoveryv1.Endpoint{
						Addresses:  []string{fmt.Sprintf("10.244.%d.%d", i/250, i%250+1), "10.245.0.1"},
						Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating},
						NodeName:   node, Zone: zone, Hints: hints,
					})
				}
			}
		}
	}
	eps = append(eps, discoveryv1.Endpoint{}, discoveryv1.Endpoint{Addresses: []string{"fd00::1"}},
		discoveryv1.Endpoint{Addresses: []string{"not-an-ip"}}, discoveryv1.Endpoint{Addresses: []string{"10.244.0.1"}, NodeName: ptr.To("self"),
			Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z2"}}}})
	ports := []discoveryv1.EndpointPort{
		{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
		{Name: ptr.To("dns"), Port: ptr.To[int32](5353), Protocol: ptr.To(corev1.ProtocolUDP)},
		{Name: ptr.To("none")}, {Port: ptr.To[int32](9000)}, {Name: ptr.To("big"), Port: ptr.To[int32](70000)},
	}
	mkSlice := func(name string, labels map[string]string, at discoveryv1.AddressType, eps []discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		l := map[string]string{discoveryv1.LabelServiceName: "web", "other": "x"}
		for k, v := range labels {
			l[k] = v
		}
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: l},
			AddressType: at, Ports: ports, Endpoints: eps}
	}
	full := []*discoveryv1.EndpointSlice{
		mkSlice("web-a", nil, discoveryv1.AddressTypeIPv4, eps[:len(eps)/2]),
		mkSlice("web-b", nil, discoveryv1.AddressTypeIPv4, eps[len(eps)/3:]), // overlapping: duplicates
		mkSlice("web-v6", nil, discoveryv1.AddressTypeIPv6, []discoveryv1.Endpoint{{Addresses: []string{"fd00::2"}}}),
		mkSlice("web-headless", map[string]string{corev1.IsHeadlessService: ""}, discoveryv1.AddressTypeIPv4, eps[:3]),
	}
	var cached, fullAPI []*api.EndpointSlice
	for _, s := range full {
		fullAPI = append(fullAPI, apiSlice(s))
		c, err := TrimForCache(toAPI(s))
		if err != nil {
			t.Fatal(err)
		}
		cached = append(cached, c.(*EndpointSlice).Object())
	}
	svcPorts := []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30080},
		{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053}, {Name: "", Port: 90}}
	for _, tp := range []string{"", corev1.ServiceTrafficDistributionPreferClose, corev1.ServiceTrafficDistributionPreferSameNode} {
		for _, etp := range []corev1.ServiceExternalTrafficPolicy{corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal} {
			for _, topo := range []string{"", "kubernetes.io/hostname", "openyurt.io/nodepool"} {
				svc := &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Labels: map[string]string{"app": "web"},
						Annotations: map[string]string{service.TopologyAnnotation: topo, "other": "x"}},
					Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
						Ports: svcPorts, ExternalIPs: []string{"192.0.2.1"}, ExternalTrafficPolicy: etp, HealthCheckNodePort: 31000,
						Selector: map[string]string{"app": "web"}, SessionAffinity: corev1.ServiceAffinityClientIP},
					Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.51.100.1"}}}},
				}
				if tp != "" {
					svc.Spec.TrafficDistribution = ptr.To(tp)
				}
				svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](600)}}
				if etp == corev1.ServiceExternalTrafficPolicyLocal {
					svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
				}
				trimmed, err := TrimForCache(toAPI(svc))
				if err != nil {
					t.Fatal(err)
				}
				svcAPI := apiService(svc)
				in := func(s *api.Service, slices []*api.EndpointSlice) service.Input {
					topology, err := service.TopologyOf(s)
					if err != nil {
						t.Fatal(err)
					}
					return service.Input{Service: s, Slices: slices, Cluster: cluster, Policy: service.Policy{Topology: topology}}
				}
				wantRes, wantErr := service.Frontends(in(svcAPI, fullAPI))
				gotRes, gotErr := service.Frontends(in(trimmed.(*Service).Object(), cached))
				if !reflect.DeepEqual(gotRes, wantRes) || !reflect.DeepEqual(gotErr, wantErr) {
					t.Errorf("%s %s %q: trimmed objects give %+v, %v; full ones %+v, %v", tp, etp, topo, gotRes, gotErr, wantRes, wantErr)
				}
				if len(wantRes.Frontends) == 0 {
					t.Errorf("%s %s %q: no frontends: the comparison shows nothing", tp, etp, topo)
				}
				if got, want := service.HealthCheckOf(in(trimmed.(*Service).Object(), cached)), service.HealthCheckOf(in(svcAPI, fullAPI)); got != want {
					t.Errorf("%s %s %q: health check %+v from trimmed objects, %+v from full ones", tp, etp, topo, got, want)
				}
			}
		}
	}
}

// fullNode is a Node as kubelet, kubeadm, Flannel's annotations and edgeplane leave it in the API
// server: most of its bytes are what no reconciler of the agent reads.
func fullNode() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "u-n1", ResourceVersion: "7", Generation: 3,
			CreationTimestamp: metav1.Unix(1700000000, 0), Finalizers: []string{"example.com/f"},
			OwnerReferences: []metav1.OwnerReference{{Name: "o"}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate,
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:status":{}}`)}}},
			Labels: map[string]string{"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux",
				"apps.openyurt.io/nodepool": "pool-a", corev1.LabelTopologyZone: "z1", "bgp": "speaker"},
			Annotations: map[string]string{
				BackendTypeAnnotation: "vxlan", BackendDataAnnotation: `{"VNI":1,"VtepMAC":"02:00:00:00:00:0b"}`,
				PublicIPAnnotation: "172.30.0.11", PodCIDRAnnotation: "10.244.9.0/24", RoutesAdvertisedAnnotation: "site-a",
				lastApplied:                                              `{"big":"object"}`,
				"kubeadm.alpha.kubernetes.io/cri-socket":                 "unix:///run/containerd/containerd.sock",
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
			}},
		Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}, ProviderID: "lab://n1",
			Taints: []corev1.Taint{{Key: "ToBeDeletedByClusterAutoscaler", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{
			Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.30.0.11"}, {Type: corev1.NodeHostName, Address: "n1"}},
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("2Gi")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1900Mi")},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "kubelet is posting ready status", LastHeartbeatTime: metav1.Unix(1700000050, 0)}},
			NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.34.0", OSImage: "Debian GNU/Linux 12", KernelVersion: "6.18.0",
				ContainerRuntimeVersion: "containerd://2.1.0", Architecture: "amd64", OperatingSystem: "linux"},
			Images:          []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 1 << 20}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		},
	}
}

// What the agent derives from a Node (VTEP, tunnel address, pod CIDR, gateway role, pools and
// zones of the Services model) is the same from the trimmed Node as from the full one.
func TestTrimmedNodeEquivalence(t *testing.T) {
	for _, mutate := range []func(*corev1.Node){
		func(*corev1.Node) {},
		func(n *corev1.Node) { n.Spec.PodCIDR, n.Spec.PodCIDRs = "", nil }, // the annotation's CIDR
		func(n *corev1.Node) { n.Annotations[PublicIPOverwriteAnnotation] = "203.0.113.11" },
		func(n *corev1.Node) { n.Labels["node-role.alibabacloud.com/cloud-gateway"] = "" },
		func(n *corev1.Node) { delete(n.Annotations, BackendDataAnnotation) },
	} {
		o := fullNode()
		mutate(o)
		obj, err := TrimForCache(toAPI(o))
		if err != nil {
			t.Fatal(err)
		}
		trimmed := obj.(*Node)
		// full is the Node with nothing left out: every annotation and address.
		full := &Node{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion, Deleting: o.DeletionTimestamp != nil,
			Labels: NodeLabelsOf(o.Name, o.Labels), Annotations: KeyValuesOf(o.Annotations),
			Spec:   NodeSpec{PodCIDR: o.Spec.PodCIDR, PodCIDRs: o.Spec.PodCIDRs, Taints: apiNode(o).Spec.Taints},
			Status: NodeStatus{Addresses: apiNode(o).Status.Addresses}}
		vtepFull, errFull := NodeVTEP(full)
		vtepTrim, errTrim := NodeVTEP(trimmed)
		if !reflect.DeepEqual(vtepFull, vtepTrim) || fmt.Sprint(errFull) != fmt.Sprint(errTrim) {
			t.Errorf("VTEP: trimmed %+v, %v; full %+v, %v", vtepTrim, errTrim, vtepFull, errFull)
		}
		ipFull, okFull := InternalIP(full)
		ipTrim, okTrim := InternalIP(trimmed)
		if ipFull != ipTrim || okFull != okTrim {
			t.Errorf("internal IP: trimmed %v %v; full %v %v", ipTrim, okTrim, ipFull, okFull)
		}
		cFull, okFull, errFull := NodePodCIDR(full)
		cTrim, okTrim, errTrim := NodePodCIDR(trimmed)
		if cFull != cTrim || okFull != okTrim || fmt.Sprint(errFull) != fmt.Sprint(errTrim) {
			t.Errorf("pod CIDR: trimmed %v %v %v; full %v %v %v", cTrim, okTrim, errTrim, cFull, okFull, errFull)
		}
		if hasAnnotations(full, VTEPAnnotations(vtepFull)) != hasAnnotations(trimmed, VTEPAnnotations(vtepFull)) {
			t.Errorf("own annotations present: differs between trimmed and full")
		}
		if !reflect.DeepEqual(trimmed.Labels, full.Labels) || !reflect.DeepEqual(trimmed.Spec.Taints, full.Spec.Taints) ||
			trimmed.Deleting != full.Deleting {
			t.Errorf("labels, taints or deletion stamp differ: trimmed %+v; full %+v", trimmed, full)
		}
	}
}

// A plain Service keeps nothing behind ServiceExtras; the cluster IPs come back as they were
// whether they are [clusterIP], none, or two (dual stack); every rarely set field comes back; a
// deep copy shares nothing that can change.
func TestServiceExtras(t *testing.T) {
	plain := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "plain"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.1", ClusterIPs: []string{"10.96.0.1"},
		SessionAffinity: corev1.ServiceAffinityNone, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}
	noIPs := plain.DeepCopy()
	noIPs.Spec.ClusterIPs = nil
	dual := plain.DeepCopy()
	dual.Spec.ClusterIPs = []string{"10.96.0.1", "fd00::1"}
	other := plain.DeepCopy()
	other.Spec.ClusterIPs = []string{"10.96.0.2"}
	rare := plain.DeepCopy()
	rare.Labels = map[string]string{service.ProxyNameLabel: "x"}
	rare.Annotations = map[string]string{service.ListenAnnotation: "pool-a"}
	rare.Spec.Type = corev1.ServiceTypeLoadBalancer
	rare.Spec.ExternalIPs = []string{"192.0.2.1"}
	rare.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	rare.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
	rare.Spec.HealthCheckNodePort = 31000
	rare.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferClose)
	rare.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.1", Ports: []corev1.PortStatus{{Port: 80}}}}
	// The coded fields (type, affinity, the traffic policies, protocols) and the UID come back as
	// they were, values outside their tables and UIDs that are not the API server's UUIDs too.
	uuid := plain.DeepCopy()
	uuid.UID = "0b5c1f9e-7d1a-4c7e-9a55-00000000002a"
	uuid.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
	uuid.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	uuid.Spec.Ports = append(uuid.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		corev1.ServicePort{Name: "s", Port: 9, Protocol: corev1.ProtocolSCTP, NodePort: 30009}, corev1.ServicePort{Port: 10})
	unknown := uuid.DeepCopy()
	unknown.UID = "0B5C1F9E-7D1A-4C7E-9A55-00000000002A" // not as the API server writes them
	unknown.Spec.Type = "Tunnel"
	unknown.Spec.SessionAffinity = "Cookie"
	unknown.Spec.ExternalTrafficPolicy = "Nearest"
	unknown.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicy(""))
	unknown.Spec.Ports[1].Protocol = "QUIC"
	otherUID := plain.DeepCopy()
	otherUID.UID = "uid-1"
	zeroUUID := plain.DeepCopy()
	zeroUUID.UID = "00000000-0000-0000-0000-000000000000"
	for name, c := range map[string]struct {
		svc    *corev1.Service
		extras bool
	}{"plain": {plain, false}, "no cluster IPs": {noIPs, false}, "dual stack": {dual, true}, "other cluster IP": {other, true}, "rare fields": {rare, true},
		"UUID and coded fields": {uuid, false}, "values outside the tables": {unknown, true}, "UID not a UUID": {otherUID, true}, "zero UUID": {zeroUUID, true}} {
		got, err := TrimForCache(toAPI(c.svc))
		if err != nil {
			t.Fatal(err)
		}
		cs := got.(*Service)
		if (cs.ServiceExtras != nil) != c.extras {
			t.Errorf("%s: extras %+v, want set %v", name, cs.ServiceExtras, c.extras)
		}
		if obj := cs.Object(); !reflect.DeepEqual(obj, toAPI(c.svc)) {
			t.Errorf("%s: rebuilt %+v; want %+v", name, obj, toAPI(c.svc))
		}
		cp := cs.DeepCopyObject().(*Service)
		if !reflect.DeepEqual(cp, cs) {
			t.Errorf("%s: deep copy %+v differs from %+v", name, cp, cs)
		}
		if name == "rare fields" {
			cp.Labels["y"], cp.Ingress[0].Hostname, cp.ExternalIPs[0] = "z", "changed.example", "192.0.2.2"
			if obj := cs.Object(); !reflect.DeepEqual(obj, toAPI(c.svc)) {
				t.Errorf("%s: changing a deep copy changed the cached Service: %+v", name, obj)
			}
		}
	}
}
