package k8s

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// apiServerScheme has the API's types, as the API server encodes them.
var apiServerScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme, coordinationv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// jsonResources are those the agent asks for in JSON (Client.coreJSON); the others in protobuf.
var jsonResources = regexp.MustCompile(`/(pods|configmaps|secrets|events)\b`)

// apiServer answers the requests of one test from a table of method and path (with query) to
// object, in protobuf or JSON as asked, and records what it was sent.
type apiServer struct {
	t         *testing.T
	responses map[string]runtime.Object
	requests  []string // "METHOD path?query content-type"
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.requests = append(s.requests, fmt.Sprintf("%s %s %s", r.Method, r.URL.RequestURI(), r.Header.Get("Content-Type")))
	if ua := r.Header.Get("User-Agent"); ua != userAgent {
		s.t.Errorf("%s %s: User-Agent %q", r.Method, r.URL, ua)
	}
	if r.Method == http.MethodPatch && !bytes.HasPrefix(body, []byte("{")) {
		s.t.Errorf("%s %s: body %q is not the JSON patch", r.Method, r.URL, body)
	}
	obj, ok := s.responses[r.Method+" "+r.URL.RequestURI()]
	if !ok {
		s.t.Logf("unexpected request %s %s", r.Method, r.URL.RequestURI())
		http.Error(w, "unexpected request", http.StatusNotFound)
		return
	}
	mediaType, accept := runtime.ContentTypeProtobuf, runtime.ContentTypeProtobuf+","+runtime.ContentTypeJSON
	if jsonResources.MatchString(r.URL.Path) {
		mediaType, accept = runtime.ContentTypeJSON, runtime.ContentTypeJSON+", */*"
	}
	if got := r.Header.Get("Accept"); got != accept {
		s.t.Errorf("%s %s: Accept %q, want %q", r.Method, r.URL, got, accept)
	}
	codecs := serializer.NewCodecFactory(apiServerScheme)
	info, _ := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), mediaType)
	gvks, _, err := apiServerScheme.ObjectKinds(obj)
	if err != nil {
		s.t.Fatal(err)
	}
	w.Header().Set("Content-Type", mediaType)
	if r.URL.Query().Get("watch") == "true" {
		// One event, then the end of the stream; the object is encoded whole, the event for the stream.
		enc := codecs.EncoderForVersion(info.Serializer, gvks[0].GroupVersion())
		raw, err := runtime.Encode(enc, obj)
		if err != nil {
			s.t.Fatal(err)
		}
		frame := info.StreamSerializer.Framer.NewFrameWriter(w)
		event := &metav1.WatchEvent{Type: string(watch.Added), Object: runtime.RawExtension{Raw: raw}}
		if err := codecs.EncoderForVersion(info.StreamSerializer.Serializer, schema.GroupVersion{Version: "v1"}).Encode(event, frame); err != nil {
			s.t.Fatal(err)
		}
		return
	}
	if err := codecs.EncoderForVersion(info.Serializer, gvks[0].GroupVersion()).Encode(obj, w); err != nil {
		s.t.Fatal(err)
	}
}

func newTestClient(t *testing.T, responses map[string]runtime.Object) (*Client, *apiServer) {
	t.Helper()
	s := &apiServer{t: t, responses: responses}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return clientFor(t, srv.URL), s
}

// clientFor is NewClient with a kubeconfig naming the server at url, without credentials.
func clientFor(t *testing.T, url string) *Client {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	config := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, url)
	if err := os.WriteFile(kubeconfig, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClientRequests checks the paths, verbs and encodings of the client's requests, and that
// it decodes protobuf answers, listed and watched, into the agent's types.
func TestClientRequests(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "self", UID: "uid-self"}}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "claim", Namespace: "kube-system"}}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "ns"}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", ResourceVersion: "7"}}
	event := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "self.1", Namespace: "default"}}
	c, s := newTestClient(t, map[string]runtime.Object{
		"GET /api/v1/nodes/self":   node,
		"GET /api/v1/nodes":        &corev1.NodeList{Items: []corev1.Node{*node}},
		"PATCH /api/v1/nodes/self": node,
		"GET /apis/coordination.k8s.io/v1/namespaces/kube-system/leases?labelSelector=edgeplane.io%2Fpod-cidr-claim": &coordinationv1.LeaseList{Items: []coordinationv1.Lease{*lease}},
		"GET /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/claim":                                       lease,
		"POST /apis/coordination.k8s.io/v1/namespaces/kube-system/leases":                                            lease,
		"DELETE /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/claim":                                    &metav1.Status{Status: metav1.StatusSuccess},
		"POST /api/v1/namespaces/default/events":                                                                     event,
		"PATCH /api/v1/namespaces/default/events/self.1":                                                             event,
		"GET /apis/discovery.k8s.io/v1/endpointslices":                                                               &discoveryv1.EndpointSliceList{Items: []discoveryv1.EndpointSlice{*slice}},
		"GET /api/v1/pods?fieldSelector=spec.nodeName%3Dself":                                                        &corev1.PodList{},
		"GET /api/v1/services?resourceVersion=7&timeout=1m0s&timeoutSeconds=60&watch=true":                           svc,
	})
	ctx := t.Context()
	if n, err := c.GetNode(ctx, "self"); err != nil || n.UID != "uid-self" {
		t.Errorf("GetNode: %v, %v", n, err)
	}
	if l, err := c.ListNodes(ctx); err != nil || len(l) != 1 {
		t.Errorf("ListNodes: %v, %v", l, err)
	}
	if _, err := c.PatchNode(ctx, "self", []byte(`{"metadata":{}}`)); err != nil {
		t.Errorf("PatchNode: %v", err)
	}
	if l, err := c.ListLeases(ctx, "kube-system", "edgeplane.io/pod-cidr-claim"); err != nil || len(l.Items) != 1 {
		t.Errorf("ListLeases: %v, %v", l, err)
	}
	if l, err := c.GetLease(ctx, "kube-system", "claim"); err != nil || l.Name != "claim" {
		t.Errorf("GetLease: %v, %v", l, err)
	}
	if _, err := c.CreateLease(ctx, "kube-system", lease); err != nil {
		t.Errorf("CreateLease: %v", err)
	}
	uid := lease.UID
	if err := c.DeleteLease(ctx, "kube-system", "claim", metav1.Preconditions{UID: &uid}); err != nil {
		t.Errorf("DeleteLease: %v", err)
	}
	if _, err := c.CreateEvent(ctx, convert[api.Event](event)); err != nil {
		t.Errorf("creating an event: %v", err)
	}
	if _, err := c.PatchEvent(ctx, convert[api.Event](event), []byte(`{"count":2}`)); err != nil {
		t.Errorf("patching an event: %v", err)
	}
	if _, err := c.GetNode(ctx, "absent"); err == nil {
		t.Error("GetNode of an absent node: no error")
	}

	// Lists come trimmed for the cache (decodeList).
	list, err := c.ListerWatcher(EndpointSlices, "", fields.Everything()).List(metav1.ListOptions{})
	if l, ok := list.(*metainternalversion.List); err != nil || !ok || len(l.Items) != 1 || l.Items[0].(*EndpointSlice).Name != "web-1" {
		t.Errorf("listing EndpointSlices: %#v, %v", list, err)
	}
	if _, err := c.ListerWatcher(Pods, "", fields.OneTermEqualSelector("spec.nodeName", "self")).List(metav1.ListOptions{}); err != nil {
		t.Errorf("listing this node's Pods: %v", err)
	}
	timeout := int64(60)
	w, err := c.ListerWatcher(Services, "", fields.Everything()).Watch(metav1.ListOptions{ResourceVersion: "7", TimeoutSeconds: &timeout})
	if err != nil {
		t.Fatalf("watching Services: %v", err)
	}
	ev := <-w.ResultChan()
	w.Stop()
	if got, ok := ev.Object.(*Service); ev.Type != watch.Added || !ok || got.Name != "web" {
		t.Errorf("watch event: %v %#v", ev.Type, ev.Object)
	}

	for _, r := range s.requests {
		method, rest, _ := strings.Cut(r, " ")
		_, contentType, _ := strings.Cut(rest, " ")
		want := ""
		switch method {
		case http.MethodPost, http.MethodPut, http.MethodDelete:
			want = runtime.ContentTypeProtobuf
			if jsonResources.MatchString(rest) {
				want = runtime.ContentTypeJSON
			}
		case http.MethodPatch:
			want = "application/merge-patch+json"
			if strings.Contains(rest, "/events/") {
				want = "application/strategic-merge-patch+json"
			}
		}
		if contentType != want {
			t.Errorf("%s: Content-Type %q, want %q", r, contentType, want)
		}
	}
}

// cacheServer answers like YurtHub's local cache while the cloud is unreachable: lists from what
// it holds, and watches with an open stream that never sends an event (no initial events, no
// bookmark: openyurt v1.7.0 pkg/yurthub/proxy/local localWatch), whatever sendInitialEvents says.
type cacheServer struct {
	t     *testing.T
	nodes *corev1.NodeList
}

func (s *cacheServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/nodes" {
		http.Error(w, "not cached", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", runtime.ContentTypeProtobuf)
	if r.URL.Query().Get("watch") == "true" {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	codecs := serializer.NewCodecFactory(apiServerScheme)
	info, _ := runtime.SerializerInfoForMediaType(codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if err := codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion).Encode(s.nodes, w); err != nil {
		s.t.Error(err)
	}
}

// TestInformersSyncFromAListOnlyServer checks that the agent's informers fill from a server that
// answers lists but not watch-list streams (sendInitialEvents), as YurtHub's cache does for an
// agent started while the cloud is unreachable: client-go's reflector would otherwise wait for
// the initial events' bookmark for the whole watch timeout (5-10 minutes), again and again.
func TestInformersSyncFromAListOnlyServer(t *testing.T) {
	nodes := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "5"}, Items: []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "uid-a", ResourceVersion: "4"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b", UID: "uid-b", ResourceVersion: "5"}},
	}}
	srv := httptest.NewServer(&cacheServer{t: t, nodes: nodes})
	t.Cleanup(srv.Close)
	c := clientFor(t, srv.URL)
	informers := NewInformers(c, "a")
	nodeInformer := informers.Nodes()
	ctx, cancel := context.WithCancel(t.Context())
	defer func() { cancel(); informers.Shutdown() }()
	informers.Start(ctx)
	syncCtx, syncDone := context.WithTimeout(ctx, 10*time.Second)
	defer syncDone()
	if !cache.WaitForCacheSync(syncCtx.Done(), nodeInformer.HasSynced) {
		t.Fatal("the Node informer did not sync within 10 s from a server that answers lists but not watch-list streams")
	}
	if got := len(nodeInformer.GetStore().List()); got != 2 {
		t.Errorf("%d Nodes in the informer, want 2", got)
	}
}
