package k8s

import (
	"maps"
	"slices"
	"strings"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// Service is a Service as the agent's cache holds it (TrimForCache): what pkg/service and the
// service reconciler read, in a 128-byte struct where the decoded corev1.Service takes ~900 before
// its strings (its ObjectMeta, a ServiceSpec of 25 fields, the status), so 10,000 Services cost
// ~7 MiB less (docs/benchmarks.md, "Services cold start", "Scale"). The fields that take one of a
// few values (type, session affinity, the traffic policies, a port's protocol) are one byte each
// and the UID its 16 bytes, not a 36-byte string. What most Services leave unset (labels and
// annotations the agent reads, external IPs, a load balancer's ingress, session affinity's
// timeout, a health check node port, a traffic distribution, more cluster IPs than one, a value
// the API did not have when this was written) is behind one pointer, nil for most. Object
// rebuilds the *api.Service the model takes, for one reconcile.
//
// Kept: name, namespace, UID and resourceVersion (keys, events), creationTimestamp (the start-up
// pass's order; the API has it to the second), the proxy-name label and the two OpenYurt
// annotations, the spec fields the model reads, of each port its name, protocol, port and node
// port, and the load balancer's ingress. The selector (kube-controller-manager turns it into
// EndpointSlices), target ports (the slices carry them) and the other fields go. Whatever
// pkg/controller or pkg/service starts reading of a Service must be kept here.
type Service struct {
	Namespace, Name, ResourceVersion string
	ClusterIP                        string
	Ports                            []ServicePort
	*ServiceExtras
	Created int64    // creationTimestamp, Unix seconds
	uid     [16]byte // the UID when it is a UUID as the API server writes them (parseUID); else ServiceExtras.UID

	typ, affinity, externalPolicy, internalPolicy code // spec.type, sessionAffinity, externalTrafficPolicy, internalTrafficPolicy
	// OneClusterIP says spec.clusterIPs is [ClusterIP], as for most Services; otherwise
	// Extras.ClusterIPs holds it.
	OneClusterIP bool
}

// ServiceExtras are the fields of a Service most leave unset; nil when all are.
type ServiceExtras struct {
	Labels, Annotations   map[string]string // only the kept keys; nil when none
	ClusterIPs            []string          // when not [ClusterIP] (Service.OneClusterIP)
	ExternalIPs           []string
	SessionAffinityConfig *api.SessionAffinityConfig
	HealthCheckNodePort   int32
	TrafficDistribution   *string
	Ingress               []api.LoadBalancerIngress
	// UID is the UID when it is not a UUID as the API server writes them.
	UID types.UID
	// Unknown holds the values of the coded fields (type, session affinity, the traffic
	// policies, the ports' protocols: serviceCodes) that are none of their table's, by table;
	// a port's unknown protocol is keyed by its index.
	Unknown map[unknownKey]string
}

// ServicePort is a Service port as the model reads it.
type ServicePort struct {
	Name           string
	Port, NodePort int32
	protocol       code
}

// code is a field's value as an index in its table (serviceCodes), codeUnset for the field
// unset ("" or a nil pointer) and codeOther for a value the table does not have, which
// ServiceExtras.Unknown then holds.
type code uint8

const (
	codeUnset code = 0
	codeOther code = 255
)

// The tables of the coded fields: what the API allows of each when this was written.
var (
	serviceTypes     = []string{"", string(api.ServiceTypeClusterIP), string(api.ServiceTypeNodePort), string(api.ServiceTypeLoadBalancer), string(api.ServiceTypeExternalName)}
	serviceAffinity  = []string{"", string(api.ServiceAffinityNone), string(api.ServiceAffinityClientIP)}
	trafficPolicies  = []string{"", string(api.ServiceExternalTrafficPolicyCluster), string(api.ServiceExternalTrafficPolicyLocal)}
	serviceProtocols = []string{"", string(api.ProtocolTCP), string(api.ProtocolUDP), string(api.ProtocolSCTP)}
)

// unknownKey names a coded field whose value is not in its table: field is one of the fields
// below, index a port's index for fieldProtocol.
type unknownKey struct {
	field uint8
	index int32
}

const (
	fieldType uint8 = iota
	fieldAffinity
	fieldExternalPolicy
	fieldInternalPolicy
	fieldProtocol
)

// encode is v's code in table; an unknown value is recorded in *unknown under k.
func encode(table []string, v string, k unknownKey, unknown *map[unknownKey]string) code {
	if i := slices.Index(table, v); i >= 0 {
		return code(i)
	}
	if *unknown == nil {
		*unknown = map[unknownKey]string{}
	}
	(*unknown)[k] = strings.Clone(v) // v may be a message's bytes (Unmarshal)
	return codeOther
}

// decode is the value of c in table, an unknown one from x.
func (x *ServiceExtras) decode(table []string, c code, k unknownKey) string {
	if c == codeOther {
		return x.Unknown[k]
	}
	return table[c]
}

// parseUID is u as 16 bytes when it is a UUID in the form the API server writes (lowercase
// hex, 8-4-4-4-12) and not all zeros (the zero array stands for no UID); formatUID gives it back.
func parseUID(u types.UID) (b [16]byte, ok bool) {
	if len(u) != 36 {
		return b, false
	}
	j := 0
	for i := 0; i < 36; {
		switch i {
		case 8, 13, 18, 23:
			if u[i] != '-' {
				return b, false
			}
			i++
			continue
		}
		hi, ok1 := hexDigit(u[i])
		lo, ok2 := hexDigit(u[i+1])
		if !ok1 || !ok2 {
			return b, false
		}
		b[j] = hi<<4 | lo
		i, j = i+2, j+1
	}
	return b, b != [16]byte{}
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func formatUID(b [16]byte) types.UID {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, v := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, digits[v>>4], digits[v&0xf])
	}
	return types.UID(out)
}

// extras is s's rarely set fields, for reading only: noExtras when none is set.
func (s *Service) extras() *ServiceExtras {
	if s.ServiceExtras == nil {
		return &noExtras
	}
	return s.ServiceExtras
}

// noExtras is the extras of a Service that has none; never written.
var noExtras ServiceExtras

// UID is the Service's UID.
func (s *Service) UID() types.UID {
	if s.uid != [16]byte{} {
		return formatUID(s.uid)
	}
	return s.extras().UID
}

// Type is spec.type.
func (s *Service) Type() api.ServiceType {
	return api.ServiceType(s.extras().decode(serviceTypes, s.typ, unknownKey{field: fieldType}))
}

// SessionAffinity is spec.sessionAffinity.
func (s *Service) SessionAffinity() api.ServiceAffinity {
	return api.ServiceAffinity(s.extras().decode(serviceAffinity, s.affinity, unknownKey{field: fieldAffinity}))
}

// ExternalTrafficPolicy is spec.externalTrafficPolicy.
func (s *Service) ExternalTrafficPolicy() api.ServiceExternalTrafficPolicy {
	return api.ServiceExternalTrafficPolicy(s.extras().decode(trafficPolicies, s.externalPolicy, unknownKey{field: fieldExternalPolicy}))
}

// InternalTrafficPolicy is spec.internalTrafficPolicy, nil when unset.
func (s *Service) InternalTrafficPolicy() *api.ServiceInternalTrafficPolicy {
	if s.internalPolicy == codeUnset {
		return nil
	}
	p := api.ServiceInternalTrafficPolicy(s.extras().decode(trafficPolicies, s.internalPolicy, unknownKey{field: fieldInternalPolicy}))
	return &p
}

// Protocol is the protocol of port i of s.
func (s *Service) Protocol(i int) api.Protocol {
	return api.Protocol(s.extras().decode(serviceProtocols, s.Ports[i].protocol, unknownKey{fieldProtocol, int32(i)}))
}

// GetObjectMeta makes the Service a metav1.ObjectMetaAccessor, which is what client-go's store
// reads for its keys (namespace/name) and what cache.MetaNamespaceKeyFunc takes.
func (s *Service) GetObjectMeta() metav1.Object {
	x := s.extras()
	return &metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion, UID: s.UID(),
		Labels: x.Labels, Annotations: x.Annotations}
}

// compactService is o as the cache keeps it.
func compactService(o *api.Service) *Service {
	s := &Service{}
	s.compactFrom(o)
	return s
}

// compactFrom sets s to o as the cache keeps it. What it keeps of o's strings it keeps by
// reference, but for the namespace, the port names and any coded field's value (interned or
// copied): Unmarshal hands it strings of the message's bytes for those.
func (s *Service) compactFrom(o *api.Service) {
	spec := o.Spec
	var x ServiceExtras
	*s = Service{
		Namespace:       interned(o.Namespace),
		Name:            o.Name,
		ResourceVersion: o.ResourceVersion,
		Created:         o.CreationTimestamp.Unix(),
		ClusterIP:       spec.ClusterIP,
		OneClusterIP:    len(spec.ClusterIPs) == 1 && spec.ClusterIPs[0] == spec.ClusterIP,
		typ:             encode(serviceTypes, string(spec.Type), unknownKey{field: fieldType}, &x.Unknown),
		affinity:        encode(serviceAffinity, string(spec.SessionAffinity), unknownKey{field: fieldAffinity}, &x.Unknown),
		externalPolicy:  encode(trafficPolicies, string(spec.ExternalTrafficPolicy), unknownKey{field: fieldExternalPolicy}, &x.Unknown),
	}
	if o.CreationTimestamp.IsZero() {
		s.Created = 0
	}
	if b, ok := parseUID(o.UID); ok {
		s.uid = b
	} else {
		x.UID = o.UID
	}
	if p := spec.InternalTrafficPolicy; p != nil {
		table := trafficPolicies
		if *p == "" {
			table = nil // set, but empty: codeUnset would read as unset, so it is kept as it is
		}
		s.internalPolicy = encode(table, string(*p), unknownKey{field: fieldInternalPolicy}, &x.Unknown)
	}
	x.Labels = keep(o.Labels, service.ProxyNameLabel)
	x.Annotations = keep(o.Annotations, service.TopologyAnnotation, service.ListenAnnotation)
	x.ExternalIPs = spec.ExternalIPs
	x.SessionAffinityConfig = spec.SessionAffinityConfig
	x.HealthCheckNodePort = spec.HealthCheckNodePort
	x.TrafficDistribution = spec.TrafficDistribution
	x.Ingress = o.Status.LoadBalancer.Ingress
	if !s.OneClusterIP {
		x.ClusterIPs = spec.ClusterIPs
		if len(x.ClusterIPs) > 0 && x.ClusterIPs[0] == s.ClusterIP {
			x.ClusterIPs[0] = s.ClusterIP // one copy of the string
		}
	}
	if len(spec.Ports) > 0 {
		s.Ports = make([]ServicePort, len(spec.Ports))
		for i, p := range spec.Ports {
			s.Ports[i] = ServicePort{Name: interned(p.Name), Port: p.Port, NodePort: p.NodePort,
				protocol: encode(serviceProtocols, string(p.Protocol), unknownKey{fieldProtocol, int32(i)}, &x.Unknown)}
		}
	}
	if x.Labels != nil || x.Annotations != nil || x.ClusterIPs != nil || x.ExternalIPs != nil || x.SessionAffinityConfig != nil ||
		x.HealthCheckNodePort != 0 || x.TrafficDistribution != nil || x.Ingress != nil || x.UID != "" || x.Unknown != nil {
		s.ServiceExtras = new(ServiceExtras) // not &x: x would be allocated for every Service
		*s.ServiceExtras = x
	}
}

// interned is s, one copy of its bytes however many objects hold it (namespaces, types, port
// names, protocols).
func interned(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// Object rebuilds the Service as the model reads it. It shares no memory with the cache but the
// strings (immutable) and the load balancer ingress entries' nested slices.
func (s *Service) Object() *api.Service {
	x := s.extras()
	o := &api.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion, UID: s.UID(),
			Labels: maps.Clone(x.Labels), Annotations: maps.Clone(x.Annotations)},
		Spec: api.ServiceSpec{
			Type:                  s.Type(),
			ClusterIP:             s.ClusterIP,
			ClusterIPs:            slices.Clone(x.ClusterIPs),
			ExternalIPs:           slices.Clone(x.ExternalIPs),
			SessionAffinity:       s.SessionAffinity(),
			SessionAffinityConfig: x.SessionAffinityConfig.DeepCopy(),
			ExternalTrafficPolicy: s.ExternalTrafficPolicy(),
			HealthCheckNodePort:   x.HealthCheckNodePort,
		},
		Status: api.ServiceStatus{LoadBalancer: api.LoadBalancerStatus{Ingress: slices.Clone(x.Ingress)}},
	}
	if s.OneClusterIP {
		o.Spec.ClusterIPs = []string{s.ClusterIP}
	}
	if s.Created != 0 {
		o.CreationTimestamp = metav1.Unix(s.Created, 0)
	}
	o.Spec.InternalTrafficPolicy = s.InternalTrafficPolicy()
	if d := x.TrafficDistribution; d != nil {
		v := *d
		o.Spec.TrafficDistribution = &v
	}
	if len(s.Ports) > 0 {
		o.Spec.Ports = make([]api.ServicePort, len(s.Ports))
		for i, p := range s.Ports {
			o.Spec.Ports[i] = api.ServicePort{Name: p.Name, Protocol: s.Protocol(i), Port: p.Port, NodePort: p.NodePort}
		}
	}
	return o
}

// ServiceObject is obj, a Service from the cache (compact) or from elsewhere (a test's informer
// without the transform), as the model reads it; nil for anything else.
func ServiceObject(obj any) *api.Service {
	switch s := obj.(type) {
	case *Service:
		return s.Object()
	case *api.Service:
		return s
	}
	return nil
}
