// Package api holds the Kubernetes API types the agent reads and writes, with only the fields it
// reads: a Service, an EndpointSlice, a Node, a Pod, a ConfigMap, a Secret, an Event, an object
// reference and what they hold.
// Their Go and JSON names are the API's (k8s.io/api/core/v1, k8s.io/api/discovery/v1), so code
// reads them as it would read those, and a JSON object of the API decodes into them.
//
// They are the agent's own so that it does not link k8s.io/api/core/v1, whose package registers
// all of its 241 types (SchemeBuilder names each) and so links every type's generated code,
// about 3 MiB of the binary's resident pages in a settled agent (docs/benchmarks.md, "Scale").
// Tests may build objects as k8s.io/api's types and convert them as the client would (k8stest).
package api
