package controller

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

type gcFixture struct {
	gc     *PodGC
	eps    *memTable[netip.Addr, Endpoint]
	links  *fakeLinks
	pins   *fakePins
	pods   k8s.Informer // the agent's informer of this node's Pods
	client *fake.Clientset
}

func newGCFixture(t *testing.T) *gcFixture {
	t.Helper()
	f := &gcFixture{
		eps:    newMemTable[netip.Addr, Endpoint](),
		links:  &fakeLinks{byIdx: map[int]string{1: "eth0", 10: "veth-a", 11: "veth-b"}},
		pins:   &fakePins{veths: map[string]bool{"veth-a": true, "veth-b": true, "veth-gone": true}},
		client: fake.NewClientset(),
	}
	f.pods = k8s.NewInformers(k8stest.FromClientset(f.client), "self").Pods()
	gc, err := NewPodGC(PodGCConfig{
		Informer: f.pods, Endpoints: f.eps, Links: f.links, Pins: f.pins,
		HostVeth: func(p *api.Pod) string { return "veth-" + p.Name },
		Interval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.gc = gc
	f.eps.Upsert(netip.MustParseAddr("10.244.0.10"), Endpoint{Ifindex: 10}) // pod a
	f.eps.Upsert(netip.MustParseAddr("10.244.0.11"), Endpoint{Ifindex: 11}) // pod b
	f.eps.Upsert(netip.MustParseAddr("10.244.0.12"), Endpoint{Ifindex: 12}) // veth gone
	return f
}

func pod(name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Status:     corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func (f *gcFixture) endpoints() []string {
	m, _ := f.eps.List()
	var out []string
	for _, ip := range []string{"10.244.0.10", "10.244.0.11", "10.244.0.12"} {
		if _, ok := m[netip.MustParseAddr(ip)]; ok {
			out = append(out, ip)
		}
	}
	return out
}

func TestPodGCSweepDeletesEndpointsWithoutVeth(t *testing.T) {
	f := newGCFixture(t)
	// No Pod lists 10.244.0.11 (a CNI ADD whose IP kubelet has not published yet): it stays.
	if err := f.gc.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := f.endpoints(), []string{"10.244.0.10", "10.244.0.11"}; !reflect.DeepEqual(got, want) {
		t.Errorf("endpoints = %v; want %v", got, want)
	}
	if f.pins.veths["veth-gone"] || !f.pins.veths["veth-a"] {
		t.Errorf("pins = %v; want veth-gone removed only", f.pins.veths)
	}
}

func TestPodGCDeletedPod(t *testing.T) {
	for _, tc := range []struct {
		name    string
		deleted *corev1.Pod
		live    []*corev1.Pod
		want    []string
	}{
		{"veth is the deleted pod's", pod("a", "10.244.0.10"), nil, []string{"10.244.0.11", "10.244.0.12"}},
		{"veth belongs to another pod", pod("x", "10.244.0.10"), nil, []string{"10.244.0.10", "10.244.0.11", "10.244.0.12"}},
		{"address reused by a live pod", pod("a", "10.244.0.10"), []*corev1.Pod{pod("new", "10.244.0.10")}, []string{"10.244.0.10", "10.244.0.11", "10.244.0.12"}},
		{"veth already gone", pod("c", "10.244.0.12"), nil, []string{"10.244.0.10", "10.244.0.11"}},
		{"no endpoint", pod("d", "10.244.0.99"), nil, []string{"10.244.0.10", "10.244.0.11", "10.244.0.12"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGCFixture(t)
			for _, p := range tc.live {
				f.pods.GetIndexer().Add(k8stest.Pod(p))
			}
			deleted := k8stest.Pod(tc.deleted)
			f.gc.onDelete(deleted)
			for f.gc.queue.Len() > 0 {
				f.gc.processNext(context.Background())
			}
			if got := f.endpoints(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("endpoints = %v; want %v", got, tc.want)
			}
			// A second delete (CNI DEL or a replayed event) is harmless.
			f.gc.onDelete(deleted)
			for f.gc.queue.Len() > 0 {
				f.gc.processNext(context.Background())
			}
			if got := f.endpoints(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("after a second delete, endpoints = %v; want %v", got, tc.want)
			}
		})
	}
}

func TestPodGCRun(t *testing.T) {
	f := newGCFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := pod("a", "10.244.0.10")
	if _, err := f.client.CoreV1().Pods("default").Create(ctx, a, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	go f.pods.RunWithContext(ctx)
	done := make(chan error)
	go func() { done <- f.gc.Run(ctx) }()
	eventually(t, func() bool { return len(f.endpoints()) == 2 }) // the initial sweep
	if err := f.client.CoreV1().Pods("default").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return reflect.DeepEqual(f.endpoints(), []string{"10.244.0.11"}) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
