package k8s

import (
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// The compact Service and EndpointSlice are runtime.Objects so that a list of them is an API list
// (decodeList trims a list's items as it decodes them, and client-go's reflector extracts the
// items of a list as runtime.Objects). They carry no kind: the informers know theirs.

var (
	_ runtime.Object = (*Service)(nil)
	_ runtime.Object = (*EndpointSlice)(nil)
)

func (*Service) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (s *Service) DeepCopyObject() runtime.Object {
	c := *s
	c.Ports = slices.Clone(s.Ports)
	if s.ServiceExtras != nil {
		x := *s.ServiceExtras
		x.Labels, x.Annotations = maps.Clone(x.Labels), maps.Clone(x.Annotations)
		x.ClusterIPs, x.ExternalIPs = slices.Clone(x.ClusterIPs), slices.Clone(x.ExternalIPs)
		x.SessionAffinityConfig = x.SessionAffinityConfig.DeepCopy()
		x.Unknown = maps.Clone(x.Unknown)
		if d := x.TrafficDistribution; d != nil {
			v := *d
			x.TrafficDistribution = &v
		}
		if x.Ingress != nil {
			x.Ingress = make([]api.LoadBalancerIngress, len(s.Ingress))
			for i := range s.Ingress {
				s.Ingress[i].DeepCopyInto(&x.Ingress[i])
			}
		}
		c.ServiceExtras = &x
	}
	return &c
}

func (*EndpointSlice) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (s *EndpointSlice) DeepCopyObject() runtime.Object {
	c := *s
	c.Ports, c.Endpoints = slices.Clone(s.Ports), slices.Clone(s.Endpoints)
	return &c
}

// The compact Node, Service and EndpointSlice are what the API client decodes those kinds into
// (Scheme): from protobuf with their own Unmarshal (nodedecode.go, servicedecode.go,
// slicedecode.go), from JSON (a proxy that does not speak protobuf) by way of the API's object
// (package api), then made compact.

func (n *Node) Reset()          { *n = Node{} }
func (s *Service) Reset()       { *s = Service{} }
func (s *EndpointSlice) Reset() { *s = EndpointSlice{} }

func (n *Node) UnmarshalJSON(data []byte) error {
	return unmarshalJSONAs(data, n, compactNode)
}

func (s *Service) UnmarshalJSON(data []byte) error {
	return unmarshalJSONAs(data, s, compactService)
}

func (s *EndpointSlice) UnmarshalJSON(data []byte) error {
	return unmarshalJSONAs(data, s, compactSlice)
}

// unmarshalJSONAs sets *out to compact of the API object O that data is in JSON.
func unmarshalJSONAs[O, C any](data []byte, out *C, compact func(*O) *C) error {
	var o O
	if err := utiljson.Unmarshal(data, &o); err != nil {
		return err
	}
	*out = *compact(&o)
	return nil
}
