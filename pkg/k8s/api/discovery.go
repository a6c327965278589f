package api

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels of the discovery API the agent reads.
const (
	// LabelServiceName names an EndpointSlice's Service.
	LabelServiceName = "kubernetes.io/service-name"
	// LabelManagedBy names the controller that manages an EndpointSlice.
	LabelManagedBy = "endpointslice.kubernetes.io/managed-by"
)

// EndpointSlice is a discovery/v1 EndpointSlice.
type EndpointSlice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	AddressType       AddressType    `json:"addressType"`
	Endpoints         []Endpoint     `json:"endpoints"`
	Ports             []EndpointPort `json:"ports"`
}

// EndpointSliceList is a list of EndpointSlices.
type EndpointSliceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EndpointSlice `json:"items"`
}

// AddressType is the type of an EndpointSlice's addresses.
type AddressType string

const (
	AddressTypeIPv4 AddressType = "IPv4"
	AddressTypeIPv6 AddressType = "IPv6"
	AddressTypeFQDN AddressType = "FQDN"
)

// Endpoint is an endpoint of an EndpointSlice.
type Endpoint struct {
	Addresses  []string           `json:"addresses"`
	Conditions EndpointConditions `json:"conditions,omitempty"`
	Hostname   *string            `json:"hostname,omitempty"`
	TargetRef  *ObjectReference   `json:"targetRef,omitempty"`
	NodeName   *string            `json:"nodeName,omitempty"`
	Zone       *string            `json:"zone,omitempty"`
	Hints      *EndpointHints     `json:"hints,omitempty"`
}

// EndpointConditions are an endpoint's conditions; unset ones mean what the API says.
type EndpointConditions struct {
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating *bool `json:"terminating,omitempty"`
}

// EndpointHints are an endpoint's topology hints.
type EndpointHints struct {
	ForZones []ForZone `json:"forZones,omitempty"`
	ForNodes []ForNode `json:"forNodes,omitempty"`
}

// ForZone names a zone an endpoint serves.
type ForZone struct {
	Name string `json:"name"`
}

// ForNode names a node an endpoint serves.
type ForNode struct {
	Name string `json:"name"`
}

// EndpointPort is a port of an EndpointSlice.
type EndpointPort struct {
	Name     *string   `json:"name,omitempty"`
	Protocol *Protocol `json:"protocol,omitempty"`
	Port     *int32    `json:"port,omitempty"`
}
