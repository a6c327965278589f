package k8s

import (
	"bytes"
	"fmt"
	goruntime "runtime"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/internal/heaptest"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// BenchmarkNodeCache reports the heap an informer store holds per cached Node (fullNode: a
// kubelet-like Node, as a decoded watch event hands it over), for 5,000 Nodes: untrimmed, trimmed
// as before Nodes had their own trimming (managedFields, last-applied, images), and trimmed now.
func BenchmarkNodeCache(b *testing.B) {
	previous := func(n *corev1.Node) any {
		n.ManagedFields = nil
		delete(n.Annotations, lastApplied)
		n.Status.Images = nil
		return n
	}
	now := func(n *corev1.Node) any { obj, _ := TrimForCache(n); return obj }
	for _, v := range []struct {
		name string
		trim func(*corev1.Node) any
	}{{"untrimmed", func(n *corev1.Node) any { return n }}, {"previous", previous}, {"now", now}} {
		b.Run(v.name, func(b *testing.B) {
			const nodes = 5000
			var perNode float64
			for range b.N {
				store := cache.NewStore(cache.MetaNamespaceKeyFunc)
				before := heaptest.InUse()
				for i := range nodes {
					n := fullNode()
					n.Name = fmt.Sprintf("node-%05d", i)
					if err := store.Add(v.trim(n)); err != nil {
						b.Fatal(err)
					}
				}
				perNode = float64(heaptest.InUse()-before) / nodes
				goruntime.KeepAlive(store)
			}
			b.ReportMetric(perNode, "heap-bytes/node")
		})
	}
}

// BenchmarkDecodedNodeCache reports the heap the informer's list keeps per Node when 5,000
// kubelet-like Nodes with the lab's bulk labels (kubeletNode) are decoded from protobuf as the
// API server sends them (decodeList): unlike BenchmarkNodeCache's, every string is the decoder's
// own copy.
func BenchmarkDecodedNodeCache(b *testing.B) {
	const count = 5000
	nodes := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "42"}}
	for i := range count {
		n := kubeletNode(i)
		pool := fmt.Sprintf("pool-%03d", i%100)
		n.Labels = map[string]string{"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "ecs.c6.large",
			corev1.LabelTopologyZone: "zone-" + pool, "topology.kubernetes.io/region": "edge",
			"apps.openyurt.io/nodepool": pool, "bench.edgeplane.io/bulk": "true"}
		n.Status.Addresses[1].Address = n.Name
		nodes.Items = append(nodes.Items, n)
	}
	codecs := serializer.NewCodecFactory(apiServerScheme)
	info, _ := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	var body bytes.Buffer
	if err := codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion).Encode(nodes, &body); err != nil {
		b.Fatal(err)
	}
	nodes = nil
	var perNode float64
	for range b.N {
		before := heaptest.InUse()
		list, err := decodeList(bytes.NewReader(body.Bytes()), Nodes, nil)
		if err != nil {
			b.Fatal(err)
		}
		perNode = float64(heaptest.InUse()-before) / count
		goruntime.KeepAlive(list)
	}
	b.ReportMetric(perNode, "heap-bytes/node")
}

// BenchmarkDecodedSliceCache reports the heap the informer's list keeps per endpoint when 10,000
// EndpointSlices of 15 ready endpoints (issue 18's scale: pods on 5,000 nodes in 100 zones, the
// EndpointSlice controller's zone hints) are decoded from protobuf as the API server sends them
// (decodeList).
func BenchmarkDecodedSliceCache(b *testing.B) {
	const count, perSlice = 10000, 15
	list := &discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: "42"}}
	for i := range count {
		s := discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("svc-%05d-x7k2p", i), ResourceVersion: "7",
				Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%05d", i),
					discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
		}
		for j := range perSlice {
			n := (i*perSlice + j) * 7 % 5000
			zone := fmt.Sprintf("zone-pool-%03d", n%100)
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 16+n/1024, n/4%256, 64*(n%4)+j+2)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
				NodeName:   ptr.To(fmt.Sprintf("node-%05d", n)), Zone: &zone,
				Hints: &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}},
			})
		}
		list.Items = append(list.Items, s)
	}
	codecs := serializer.NewCodecFactory(apiServerScheme)
	info, _ := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	var body bytes.Buffer
	if err := codecs.EncoderForVersion(info.Serializer, discoveryv1.SchemeGroupVersion).Encode(list, &body); err != nil {
		b.Fatal(err)
	}
	list = nil
	var perEndpoint float64
	for range b.N {
		before := heaptest.InUse()
		got, err := decodeList(bytes.NewReader(body.Bytes()), EndpointSlices, nil)
		if err != nil {
			b.Fatal(err)
		}
		perEndpoint = float64(heaptest.InUse()-before) / (count * perSlice)
		goruntime.KeepAlive(got)
	}
	b.ReportMetric(perEndpoint, "heap-bytes/endpoint")
}

// BenchmarkDecodedServiceCache reports the heap the informer's list keeps per Service when
// 10,000 Services as the lab's bulk ones (a ClusterIP, one port, a selector, kube-apiserver's
// defaults) are decoded from protobuf as the API server sends them (decodeList).
func BenchmarkDecodedServiceCache(b *testing.B) {
	const count = 10000
	list := &corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "42"}}
	for i := range count {
		ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		list.Items = append(list.Items, corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("svc-%05d", i), ResourceVersion: "7",
				UID: types.UID(fmt.Sprintf("0b5c1f9e-7d1a-4c7e-9a55-%012d", i)), CreationTimestamp: metav1.Unix(1700000000, 0)},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
				SessionAffinity: corev1.ServiceAffinityNone, InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
				Selector: map[string]string{"app": fmt.Sprintf("svc-%05d", i)},
				Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		})
	}
	codecs := serializer.NewCodecFactory(apiServerScheme)
	info, _ := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	var body bytes.Buffer
	if err := codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion).Encode(list, &body); err != nil {
		b.Fatal(err)
	}
	list = nil
	var perService float64
	for range b.N {
		before := heaptest.InUse()
		got, err := decodeList(bytes.NewReader(body.Bytes()), Services, nil)
		if err != nil {
			b.Fatal(err)
		}
		perService = float64(heaptest.InUse()-before) / count
		goruntime.KeepAlive(got)
	}
	b.ReportMetric(perService, "heap-bytes/service")
}

// BenchmarkNodeEventDecode is the decoding of one watch event's kubelet-like Node (kubeletNode:
// images, conditions, managed fields) as the informer's cache takes it: "generated" decodes the
// corev1.Node and trims it (TrimForCache), as the agent did; "compact" decodes the compact Node
// straight from the bytes (nodeWatchDecoder).
func BenchmarkNodeEventDecode(b *testing.B) {
	codecs := serializer.NewCodecFactory(apiServerScheme)
	info, _ := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	node := kubeletNode(42)
	data, err := runtime.Encode(codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion), &node)
	if err != nil {
		b.Fatal(err)
	}
	plain := codecs.WithoutConversion().DecoderToVersion(info.Serializer, corev1.SchemeGroupVersion)
	for name, decoder := range map[string]runtime.Decoder{"generated": plain, "compact": nodeWatchDecoder{plain}} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				obj, err := runtime.Decode(decoder, data)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := TrimForCache(obj); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
