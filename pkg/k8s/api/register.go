package api

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The group versions of the types: core/v1 and discovery.k8s.io/v1.
var (
	CoreV1      = schema.GroupVersion{Version: "v1"}
	DiscoveryV1 = schema.GroupVersion{Group: "discovery.k8s.io", Version: "v1"}
)

// Resource is the core group's resource.
func Resource(resource string) schema.GroupResource {
	return CoreV1.WithResource(resource).GroupResource()
}

// KindOf is the kind of an object of this package; empty for any other object.
func KindOf(obj any) schema.GroupVersionKind {
	var kind string
	switch obj.(type) {
	case *Service:
		kind = "Service"
	case *Pod:
		kind = "Pod"
	case *ConfigMap:
		kind = "ConfigMap"
	case *Secret:
		kind = "Secret"
	case *Event:
		kind = "Event"
	case *Node:
		kind = "Node"
	case *EndpointSlice:
		return DiscoveryV1.WithKind("EndpointSlice")
	default:
		return schema.GroupVersionKind{}
	}
	return CoreV1.WithKind(kind)
}
