package k8s

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// listServer answers every GET with list, encoded as mediaType, less its last cut bytes.
func listServer(t testing.TB, list kruntime.Object, mediaType string, cut int) *httptest.Server {
	t.Helper()
	codecs := serializer.NewCodecFactory(apiServerScheme)
	info, ok := kruntime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), mediaType)
	if !ok {
		t.Fatalf("no serializer for %s", mediaType)
	}
	gvks, _, err := apiServerScheme.ObjectKinds(list)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if err := codecs.EncoderForVersion(info.Serializer, gvks[0].GroupVersion()).Encode(list, &body); err != nil {
		t.Fatal(err)
	}
	data := body.Bytes()[:body.Len()-cut]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", mediaType)
		_, _ = w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// kubeletNode is Node i as a kubelet-run node of a real cluster has it: five images, four
// conditions, managed fields of three managers.
func kubeletNode(i int) corev1.Node {
	n := fullNode()
	n.Name, n.UID = fmt.Sprintf("node-%05d", i), types.UID(kubeletUID(i))
	for range 3 {
		n.Status.Conditions = append(n.Status.Conditions, n.Status.Conditions[0])
	}
	for _, img := range []string{"openyurt/yurthub:v1.6.1", "edgeplane/edgeplane-agent:latest", "registry.k8s.io/coredns/coredns:v1.11.3",
		"prom/node-exporter:v1.8.2"} {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: []string{img, img + "@sha256:" + fmt.Sprintf("%064d", i)}, SizeBytes: 20 << 20})
	}
	for _, manager := range []string{"kubeadm", "kube-controller-manager", "kubelet"} {
		n.ManagedFields = append(n.ManagedFields, metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate,
			FieldsV1: managedFieldsJSON(50)})
	}
	return *n
}

// managedFieldsJSON is a managed fields set of n fields.
func managedFieldsJSON(n int) *metav1.FieldsV1 {
	raw := []byte("{")
	for i := range n {
		if i > 0 {
			raw = append(raw, ',')
		}
		raw = fmt.Appendf(raw, `"f:field-%03d":{}`, i)
	}
	return &metav1.FieldsV1{Raw: append(raw, '}')}
}

func kubeletUID(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }

// bulkSlice is EndpointSlice i of Service i with 15 ready endpoints, as the EndpointSlice
// controller writes it.
func bulkSlice(i int) discoveryv1.EndpointSlice {
	s := discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%05d-abcde", i), Namespace: "default", UID: types.UID(kubeletUID(i)),
			ResourceVersion: fmt.Sprint(1000 + i),
			Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%05d", i),
				discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
				FieldsV1: managedFieldsJSON(40)}}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for e := range 15 {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 100+i>>16, i>>8&255, i&255)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(fmt.Sprintf("node-%05d", e)),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: fmt.Sprintf("svc-%05d-%d", i, e), UID: "u-pod"},
		})
	}
	return s
}

// TestListsAreTrimmedAsDecoded checks that the informers' list function hands client-go's
// reflector each item as the cache keeps it (TrimForCache), decoded from the API server's
// protobuf one item at a time, with the list's resourceVersion; that a JSON answer is decoded
// whole as before; and that a list cut short is an error, not a shorter list.
func TestListsAreTrimmedAsDecoded(t *testing.T) {
	nodes := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "42"}}
	slices := &discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: "43"}}
	services := &corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "44"}}
	for i := range 3 {
		nodes.Items = append(nodes.Items, kubeletNode(i))
		slices.Items = append(slices.Items, bulkSlice(i))
		services.Items = append(services.Items, corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%05d", i), Namespace: "default", ResourceVersion: "9",
				Annotations: map[string]string{lastApplied: `{"big":"object"}`}},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}})
	}
	list := func(resource Resource, url string) (kruntime.Object, error) {
		return clientFor(t, url).ListerWatcher(resource, "", fields.Everything()).List(metav1.ListOptions{ResourceVersion: "0"})
	}
	for _, c := range []struct {
		resource Resource
		list     kruntime.Object
	}{{Nodes, nodes}, {EndpointSlices, slices}, {Services, services}} {
		items, err := meta.ExtractList(c.list.DeepCopyObject())
		if err != nil {
			t.Fatal(err)
		}
		want := make([]any, len(items))
		for i, obj := range items {
			if want[i], err = TrimForCache(toAPI(obj)); err != nil {
				t.Fatal(err)
			}
		}
		rv := c.list.(metav1.ListInterface).GetResourceVersion()

		srv := listServer(t, c.list, kruntime.ContentTypeProtobuf, 0)
		got, err := list(c.resource, srv.URL)
		if err != nil {
			t.Fatalf("%s: %v", c.resource, err)
		}
		l, ok := got.(*metainternalversion.List)
		if !ok {
			t.Fatalf("%s: listed %T, want the items trimmed in a *metainternalversion.List", c.resource, got)
		}
		if l.ResourceVersion != rv || len(l.Items) != len(want) {
			t.Errorf("%s: resourceVersion %q and %d items, want %q and %d", c.resource, l.ResourceVersion, len(l.Items), rv, len(want))
		}
		for i := range min(len(l.Items), len(want)) {
			if !reflect.DeepEqual(l.Items[i], want[i]) {
				t.Errorf("%s: item %d\n%#v\nwant it trimmed\n%#v", c.resource, i, l.Items[i], want[i])
			}
		}

		srv = listServer(t, c.list, kruntime.ContentTypeJSON, 0)
		got, err = list(c.resource, srv.URL)
		if err != nil {
			t.Fatalf("%s as JSON: %v", c.resource, err)
		}
		// Decoded whole, as package api's list: the informer's transform trims the items.
		if _, ok := got.(*metainternalversion.List); ok || meta.LenList(got) != len(items) ||
			got.(metav1.ListInterface).GetResourceVersion() != rv {
			t.Errorf("%s as JSON: %T of %d items, want the list of %d items as sent", c.resource, got, meta.LenList(got), len(items))
		} else if jsonItems, err := meta.ExtractList(got); err != nil {
			t.Fatal(err)
		} else {
			for i := range min(len(jsonItems), len(want)) {
				if trimmed, err := TrimForCache(jsonItems[i]); err != nil || !reflect.DeepEqual(trimmed, want[i]) {
					t.Errorf("%s as JSON: item %d trimmed\n%#v (%v)\nwant\n%#v", c.resource, i, trimmed, err, want[i])
				}
			}
		}

		for _, cut := range []int{1, 200} {
			srv = listServer(t, c.list, kruntime.ContentTypeProtobuf, cut)
			if got, err := list(c.resource, srv.URL); err == nil {
				t.Errorf("%s cut %d bytes short: listed %d items and no error", c.resource, cut, len(got.(*metainternalversion.List).Items))
			}
		}
	}
}

// ListNodes (the pod CIDR allocator's, at registration) lists the Nodes trimmed, from protobuf
// as from JSON.
func TestListNodesTrimmed(t *testing.T) {
	nodes := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "42"}}
	for i := range 3 {
		nodes.Items = append(nodes.Items, kubeletNode(i))
	}
	var want []*Node
	for _, n := range nodes.DeepCopy().Items {
		want = append(want, nodeOf(&n))
	}
	for _, mediaType := range []string{kruntime.ContentTypeProtobuf, kruntime.ContentTypeJSON} {
		got, err := clientFor(t, listServer(t, nodes, mediaType, 0).URL).ListNodes(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", mediaType, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: nodes\n%+v\nwant them as the cache keeps them\n%+v", mediaType, got, want)
		}
	}
}

// BenchmarkListNodes lists 5,000 kubelet-like Nodes (kubeletNode) from a protobuf answer as the
// informers did before (the answer read whole, decoded whole, then trimmed) and as they do now
// (decoded and trimmed an item at a time), and reports the most heap sampled during the list
// (every 100 us, above the heap before it) and, with -benchmem, what a list allocates.
func BenchmarkListNodes(b *testing.B) {
	const count = 5000
	nodes := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "42"}}
	for i := range count {
		nodes.Items = append(nodes.Items, kubeletNode(i))
	}
	srv := listServer(b, nodes, kruntime.ContentTypeProtobuf, 0)
	nodes = nil
	c := clientFor(&testing.T{}, srv.URL)
	for _, v := range []struct {
		name string
		list func(ctx context.Context) (int, error)
	}{
		{"decoded-whole", func(ctx context.Context) (int, error) {
			l := &corev1.NodeList{}
			if err := c.core.Get().Resource("nodes").Do(ctx).Into(l); err != nil {
				return 0, err
			}
			for i := range l.Items {
				if _, err := TrimForCache(&l.Items[i]); err != nil {
					return 0, err
				}
			}
			return len(l.Items), nil
		}},
		{"streamed", func(context.Context) (int, error) {
			l, err := c.ListerWatcher(Nodes, "", fields.Everything()).List(metav1.ListOptions{ResourceVersion: "0"})
			if err != nil {
				return 0, err
			}
			return len(l.(*metainternalversion.List).Items), nil
		}},
	} {
		b.Run(v.name, func(b *testing.B) {
			var peak uint64
			for range b.N {
				runtime.GC()
				stop, most := sampleHeap(100 * time.Microsecond)
				n, err := v.list(b.Context())
				stop()
				if err != nil || n != count {
					b.Fatalf("%d nodes, %v", n, err)
				}
				peak = max(peak, most())
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// sampleHeap samples the heap's objects (live and not yet collected) every period until stop;
// most is the most seen above the first sample.
func sampleHeap(period time.Duration) (stop func(), most func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var top uint64
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			top = max(top, read())
			select {
			case <-quit:
				return
			case <-time.After(period):
			}
		}
	}()
	return func() { close(quit); <-done }, func() uint64 { return top - min(top, base) }
}

// pagedServer answers the Node list in two pages (a continue token, as an API server listing
// from etcd does) and every watch with an open stream without events.
type pagedServer struct {
	t      *testing.T
	pages  [2]*corev1.NodeList
	listed chan string // the continue token of each list request
}

func (s *pagedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", kruntime.ContentTypeProtobuf)
	if r.URL.Query().Get("watch") == "true" {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	page := s.pages[0]
	if token := r.URL.Query().Get("continue"); token != "" {
		page = s.pages[1]
	}
	select {
	case s.listed <- r.URL.Query().Get("continue"):
	default:
	}
	codecs := serializer.NewCodecFactory(apiServerScheme)
	info, _ := kruntime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), kruntime.ContentTypeProtobuf)
	if err := codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion).Encode(page, w); err != nil {
		s.t.Error(err)
	}
}

// A list the server pages goes through client-go's pager page by page: the informer's cache
// holds every page's Nodes, trimmed.
func TestInformerSyncsFromPagedLists(t *testing.T) {
	s := &pagedServer{t: t, listed: make(chan string, 4)}
	s.pages[0] = &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "50", Continue: "page-2"}}
	s.pages[1] = &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "50"}}
	for i := range 4 {
		s.pages[i/2].Items = append(s.pages[i/2].Items, kubeletNode(i))
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	informers := NewInformers(clientFor(t, srv.URL), "node-00000")
	nodes := informers.Nodes()
	ctx, cancel := context.WithCancel(t.Context())
	defer func() { cancel(); informers.Shutdown() }()
	informers.Start(ctx)
	syncCtx, syncDone := context.WithTimeout(ctx, 10*time.Second)
	defer syncDone()
	if !cache.WaitForCacheSync(syncCtx.Done(), nodes.HasSynced) {
		t.Fatal("the Node informer did not sync from a paged list within 10 s")
	}
	if first, second := <-s.listed, <-s.listed; first != "" || second != "page-2" {
		t.Errorf("list requests with continue tokens %q, %q; want the first page, then page-2", first, second)
	}
	cached := nodes.GetStore().List()
	if len(cached) != 4 {
		t.Fatalf("%d Nodes cached, want the 4 of both pages", len(cached))
	}
	for _, obj := range cached {
		if _, ok := obj.(*Node); !ok {
			t.Errorf("cached %T, want the cache's Node", obj)
		}
	}
}
