package controller

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

const (
	speakerLabel = "edgeplane.io/bgp-speaker"
	segmentLabel = "topology.edgeplane.io/segment"
)

// site-a in route mode: labelled nodes speak, each to the router of its segment.
const siteARoute = `
domains:
  site-a:
    encapsulation: route
    bgp:
      localASN: 64512
      speakerSelector: {matchLabels: {edgeplane.io/bgp-speaker: "true"}}
      peers:
      - {address: 172.31.0.1, peerASN: 65000, nodeSelector: {matchLabels: {topology.edgeplane.io/segment: "1"}}}
      - {address: 172.31.1.1, peerASN: 65000, nodeSelector: {matchLabels: {topology.edgeplane.io/segment: "2"}}}
`

func routerPeer(addr string) domain.BGPPeer {
	return domain.BGPPeer{Address: netip.MustParseAddr(addr), Port: 179, PeerASN: 65000, LocalASN: 64512,
		HoldTime: domain.DefaultHoldTime, GracefulRestartTime: domain.DefaultGracefulRestartTime}
}

// The view follows the ConfigMap and the local Node's labels through real informers (fake
// clientset), tells its listeners once per change, and keeps the last valid configuration's view
// when the ConfigMap turns invalid.
func TestRouteModeViewFollowsConfigAndNode(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	self := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "self", Labels: map[string]string{
		domain.DefaultPoolLabel: "site-a", speakerLabel: "true", segmentLabel: "1"}}}
	client := fake.NewClientset(self, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "other",
		Labels: map[string]string{domain.DefaultPoolLabel: "site-a", segmentLabel: "2"}}})
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(k8stest.Transform))
	recorder := record.NewFakeRecorder(10)
	domains, err := NewDomainConfig(factory.Core().V1().ConfigMaps().Informer(), "edgeplane-domains", recorder, nil)
	if err != nil {
		t.Fatal(err)
	}
	view, err := NewRouteModeView("self", factory.Core().V1().Nodes().Informer(), domains)
	if err != nil {
		t.Fatal(err)
	}
	domains.OnChange(view.Refresh)
	views := make(chan domain.NodeRouting, 10)
	view.OnChange(func(v domain.NodeRouting) { views <- v })
	next := func(what string) domain.NodeRouting {
		t.Helper()
		select {
		case v := <-views:
			return v
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no view change", what)
			return domain.NodeRouting{}
		}
	}
	if _, ok := view.View(); ok {
		t.Fatal("a view before the informers synced")
	}

	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	if !domains.WaitForSync(ctx) {
		t.Fatal("the domain configuration did not sync")
	}
	view.Refresh() // as the agent does once the ConfigMap synced
	if v := next("start without a ConfigMap"); !v.Equal(domain.NodeRouting{Domain: "site-a", Encapsulation: domain.VXLAN}) {
		t.Fatalf("without a ConfigMap: %+v", v)
	}

	cms := client.CoreV1().ConfigMaps("edgeplane-system")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "edgeplane-domains", Namespace: "edgeplane-system"},
		Data: map[string]string{domain.ConfigKey: siteARoute}}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := domain.NodeRouting{Domain: "site-a", Encapsulation: domain.Route, Speaker: true, Peers: []domain.BGPPeer{routerPeer("172.31.0.1")}}
	if v := next("route mode configured"); !v.Equal(want) {
		t.Fatalf("route mode: %+v\nwant %+v", v, want)
	}
	if v, ok := view.View(); !ok || !v.Equal(want) {
		t.Fatalf("View = %+v, %t", v, ok)
	}

	// An invalid edit: one event, the view of the last valid configuration stays.
	cm.Data[domain.ConfigKey] = strings.Replace(siteARoute, "peerASN: 65000,", "peerASN: 65000, holdTime: 1,", 1)
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-recorder.Events:
		if !strings.Contains(ev, ReasonInvalidDomainConfig) || !strings.Contains(ev, "domains.site-a: bgp.peers[0]: holdTime 1s") {
			t.Errorf("event %q", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event about the invalid ConfigMap")
	}
	if v, _ := view.View(); !v.Equal(want) || !domains.Model().Speaks(labels.Set(self.Labels)) {
		t.Fatalf("an invalid ConfigMap changed the view: %+v", v)
	}

	// The node moves to the other segment: the other router.
	self.Labels[segmentLabel] = "2"
	if _, err := client.CoreV1().Nodes().Update(ctx, self, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want.Peers = []domain.BGPPeer{routerPeer("172.31.1.1")}
	if v := next("segment label changed"); !v.Equal(want) {
		t.Fatalf("after the segment changed: %+v\nwant %+v", v, want)
	}

	// A change of the configuration that does not concern this node tells nobody; the next
	// change (the speaker label removed) is the next view the listener gets.
	cm.Data[domain.ConfigKey] = siteARoute + "connectivity:\n- domains: [site-a, cloud]\n  mode: private\n"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return domains.Model().Reachable("site-a", "cloud") })
	delete(self.Labels, speakerLabel)
	if _, err := client.CoreV1().Nodes().Update(ctx, self, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if v := next("speaker label removed"); !v.Equal(domain.NodeRouting{Domain: "site-a", Encapsulation: domain.Route}) {
		t.Fatalf("after the speaker label went: %+v", v)
	}

	if err := cms.Delete(ctx, cm.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if v := next("ConfigMap deleted"); !v.Equal(domain.NodeRouting{Domain: "site-a", Encapsulation: domain.VXLAN}) {
		t.Fatalf("after the ConfigMap was deleted: %+v", v)
	}
	select {
	case v := <-views:
		t.Errorf("an extra view change: %+v", v)
	case <-time.After(100 * time.Millisecond):
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type unsyncedModel struct{}

func (unsyncedModel) Model() *domain.Model { return domain.DefaultModel() }
func (unsyncedModel) HasSynced() bool      { return false }

// Before the configuration synced, or before the local Node is known, there is no view: a
// route-mode node must not pass for a vxlan node of the default domain meanwhile.
func TestRouteModeViewWaitsForConfigAndNode(t *testing.T) {
	informer := cache.NewSharedIndexInformer(&cache.ListWatch{}, &corev1.Node{}, 0, cache.Indexers{})
	calls := 0
	synced := &staticModel{}
	synced.m.Store(parseModel(t, siteARoute))

	notSynced, err := NewRouteModeView("self", informer, unsyncedModel{})
	if err != nil {
		t.Fatal(err)
	}
	notSynced.OnChange(func(domain.NodeRouting) { calls++ })
	noNode, err := NewRouteModeView("self", informer, synced)
	if err != nil {
		t.Fatal(err)
	}
	noNode.OnChange(func(domain.NodeRouting) { calls++ })
	noNode.Refresh()
	if _, ok := noNode.View(); ok || calls != 0 {
		t.Fatalf("a view without the local Node (calls %d)", calls)
	}

	self := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "self", Labels: map[string]string{
		domain.DefaultPoolLabel: "site-a", speakerLabel: "true", segmentLabel: "1"}}}
	if err := informer.GetStore().Add(k8stest.Node(self)); err != nil {
		t.Fatal(err)
	}
	notSynced.Refresh()
	if _, ok := notSynced.View(); ok || calls != 0 {
		t.Fatalf("a view before the configuration synced (calls %d)", calls)
	}
	noNode.Refresh()
	want := domain.NodeRouting{Domain: "site-a", Encapsulation: domain.Route, Speaker: true, Peers: []domain.BGPPeer{routerPeer("172.31.0.1")}}
	if v, ok := noNode.View(); !ok || !v.Equal(want) || calls != 1 {
		t.Fatalf("View = %+v, %t (calls %d)", v, ok, calls)
	}

	// The Node deleted: the last view stays (the agent's node is going away; nothing to undo here).
	if err := informer.GetStore().Delete(self); err != nil {
		t.Fatal(err)
	}
	noNode.Refresh()
	if v, ok := noNode.View(); !ok || !v.Equal(want) || calls != 1 {
		t.Fatalf("after the Node went: View = %+v, %t (calls %d)", v, ok, calls)
	}
}

// A listener registered after the view became known gets it at once (the agent's Node informer
// can deliver the local Node before the agent registers the BGP speaker and the pod MTU's
// listener; the view does not change again, so nothing else would tell them).
func TestRouteModeViewHandsAKnownViewToALateListener(t *testing.T) {
	informer := cache.NewSharedIndexInformer(&cache.ListWatch{}, &corev1.Node{}, 0, cache.Indexers{})
	synced := &staticModel{}
	synced.m.Store(parseModel(t, siteARoute))
	view, err := NewRouteModeView("self", informer, synced)
	if err != nil {
		t.Fatal(err)
	}
	self := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "self", Labels: map[string]string{
		domain.DefaultPoolLabel: "site-a", speakerLabel: "true", segmentLabel: "1"}}}
	if err := informer.GetStore().Add(k8stest.Node(self)); err != nil {
		t.Fatal(err)
	}
	view.Refresh() // the local Node's event, before any listener
	var got []domain.NodeRouting
	view.OnChange(func(r domain.NodeRouting) { got = append(got, r) })
	want := domain.NodeRouting{Domain: "site-a", Encapsulation: domain.Route, Speaker: true, Peers: []domain.BGPPeer{routerPeer("172.31.0.1")}}
	if len(got) != 1 || !got[0].Equal(want) {
		t.Fatalf("late listener got %+v, want one call with %+v", got, want)
	}
	view.Refresh() // unchanged: no second call
	if len(got) != 1 {
		t.Fatalf("late listener called %d times after an unchanged refresh, want 1", len(got))
	}
}
