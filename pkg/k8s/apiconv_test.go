package k8s

import (
	"encoding/json"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// The tests build objects as k8s.io/api's types, and hold the decoders to what the generated
// code decodes. These convert those into package api's through JSON, which both name alike.

// convert is o's JSON decoded into a new T, with o's ObjectMeta as it is (JSON would drop a zero
// time, which protobuf keeps); it panics on an error, which is the test's.
func convert[T any](o any) *T {
	b, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	if in, ok := o.(metav1.ObjectMetaAccessor); ok {
		if m := reflect.ValueOf(out).Elem().FieldByName("ObjectMeta"); m.IsValid() {
			m.Set(reflect.ValueOf(*in.GetObjectMeta().(*metav1.ObjectMeta).DeepCopy()))
		}
	}
	return out
}

// apiNode is o as package api's Node, its taints' times as they are (a zero one too).
func apiNode(o *corev1.Node) *api.Node {
	n := convert[api.Node](o)
	for i, t := range o.Spec.Taints {
		n.Spec.Taints[i].TimeAdded = t.TimeAdded.DeepCopy()
	}
	return n
}

// nodeOf, serviceOf and sliceOf are what the cache keeps of an object of k8s.io/api.
func nodeOf(o *corev1.Node) *Node          { return compactNode(apiNode(o)) }
func serviceOf(o *corev1.Service) *Service { return compactService(convert[api.Service](o)) }
func sliceOf(o *discoveryv1.EndpointSlice) *EndpointSlice {
	return compactSlice(convert[api.EndpointSlice](o))
}

// toAPI is o as package api's type when it is a Service, EndpointSlice or Node of k8s.io/api,
// and o itself otherwise.
func toAPI(o any) any {
	switch o := o.(type) {
	case *corev1.Service:
		return convert[api.Service](o)
	case *discoveryv1.EndpointSlice:
		return convert[api.EndpointSlice](o)
	case *corev1.Node:
		return apiNode(o)
	}
	return o
}
