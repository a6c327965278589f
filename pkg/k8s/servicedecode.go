package k8s

import (
	"fmt"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// Services of the informers' lists and watches are decoded straight into the compact Service, as
// Nodes and EndpointSlices are (nodedecode.go, slicedecode.go): the generated code decoded each
// of 10,000 Services whole first (its ObjectMeta with managed fields, a ServiceSpec of 25 fields,
// the selector's map, the status), garbage once compacted, at the agent's start. Unmarshal reads
// the fields compactFrom keeps, the rare ones too (a session affinity's config, a load
// balancer's ingress), and skips the rest by their lengths. It is held to what compactService
// keeps of the generated code's Service for the same bytes (TestServiceUnmarshalAsCompactService,
// FuzzServiceUnmarshal).

// Unmarshal sets s to the Service message data (the protobuf encoding of a Service of the API) as
// the cache keeps it (compactService). It copies what it keeps: data may be reused.
func (s *Service) Unmarshal(data []byte) error {
	d := serviceFieldsPool.Get().(*serviceFields)
	defer func() {
		d.reset()
		serviceFieldsPool.Put(d)
	}()
	if err := d.service(data); err != nil {
		return fmt.Errorf("decoding a Service: %w", err)
	}
	s.compactFrom(d.object())
	return nil
}

// serviceFields are the fields of a Service message that Service keeps, as read (views of the
// message's bytes), and the api.Service compactFrom is given, reused from one to the next.
type serviceFields struct {
	objectMeta
	ports        []api.ServicePort // names and protocols are views of the message
	clusterIP    []byte
	clusterIPs   [][]byte
	externalIPs  [][]byte
	typ          []byte
	affinity     []byte
	externalTP   []byte
	internalTP   []byte
	hasInternal  bool
	distribution []byte
	hasDistrib   bool
	healthCheck  int32
	// What compactFrom keeps as they are, fresh for each Service.
	affinityConfig *api.SessionAffinityConfig
	ingress        []api.LoadBalancerIngress

	obj        api.Service
	ips        []string // scratch for obj.Spec.ClusterIPs when they are not kept
	itp        api.ServiceInternalTrafficPolicy
	labels     map[string]string
	annotation map[string]string
}

var serviceFieldsPool = sync.Pool{New: func() any { return &serviceFields{} }}

func (d *serviceFields) reset() {
	clear(d.ports)
	clear(d.clusterIPs)
	clear(d.externalIPs)
	clear(d.ips)
	*d = serviceFields{objectMeta: d.objectMeta.reset(), ports: d.ports[:0], clusterIPs: d.clusterIPs[:0],
		externalIPs: d.externalIPs[:0], ips: d.ips[:0], labels: d.labels, annotation: d.annotation}
}

// Field numbers, from k8s.io/api/core/v1 and k8s.io/apimachinery/pkg/apis/meta/v1 generated.proto.
const (
	serviceMetadata, serviceSpec, serviceStatus = 1, 2, 3

	statusLoadBalancer        = 1
	loadBalancerIngress       = 1
	servicePortName           = 1
	servicePortProtocol       = 2
	servicePortPort           = 3
	servicePortNodePort       = 5
	specPorts, specClusterIP  = 1, 3
	specType, specExternalIPs = 4, 5
	specSessionAffinity       = 7
	specExternalTP            = 11
	specHealthCheckNodePort   = 12
	specAffinityConfig        = 14
	specClusterIPs            = 18
	specInternalTP            = 22
	specTrafficDistribution   = 23
)

func (d *serviceFields) service(data []byte) error {
	return eachField(data, "Service", func(field int, m *message) error {
		switch field {
		case serviceMetadata:
			return m.message(d.objectMeta.decode)
		case serviceSpec:
			return m.message(d.spec)
		case serviceStatus:
			return m.message(d.status)
		}
		return m.skip()
	})
}

func (d *serviceFields) spec(data []byte) error {
	return eachField(data, "ServiceSpec", func(field int, m *message) (err error) {
		var b []byte
		switch field {
		case specPorts:
			return m.message(d.port)
		case specClusterIP:
			d.clusterIP, err = m.bytes()
		case specClusterIPs:
			b, err = m.bytes()
			d.clusterIPs = append(d.clusterIPs, b)
		case specType:
			d.typ, err = m.bytes()
		case specExternalIPs:
			b, err = m.bytes()
			d.externalIPs = append(d.externalIPs, b)
		case specSessionAffinity:
			d.affinity, err = m.bytes()
		case specExternalTP:
			d.externalTP, err = m.bytes()
		case specInternalTP:
			d.internalTP, err = m.bytes()
			d.hasInternal = true
		case specTrafficDistribution:
			d.distribution, err = m.bytes()
			d.hasDistrib = true
		case specHealthCheckNodePort:
			var v uint64
			v, err = m.varintField()
			d.healthCheck = int32(v)
		case specAffinityConfig:
			if b, err = m.bytes(); err != nil {
				return err
			}
			if d.affinityConfig == nil {
				d.affinityConfig = &api.SessionAffinityConfig{}
			}
			return mergeAffinityConfig(d.affinityConfig, b) // into what an earlier one set, as protobuf does
		default:
			err = m.skip()
		}
		return err
	})
}

func (d *serviceFields) port(data []byte) error {
	var p api.ServicePort
	err := eachField(data, "ServicePort", func(field int, m *message) (err error) {
		var b []byte
		var v uint64
		switch field {
		case servicePortName:
			b, err = m.bytes()
			p.Name = unsafeString(b)
		case servicePortProtocol:
			b, err = m.bytes()
			p.Protocol = api.Protocol(unsafeString(b))
		case servicePortPort:
			v, err = m.varintField()
			p.Port = int32(v)
		case servicePortNodePort:
			v, err = m.varintField()
			p.NodePort = int32(v)
		default:
			err = m.skip()
		}
		return err
	})
	d.ports = append(d.ports, p)
	return err
}

func (d *serviceFields) status(data []byte) error {
	return eachField(data, "ServiceStatus", func(field int, m *message) error {
		if field != statusLoadBalancer {
			return m.skip()
		}
		return m.message(func(data []byte) error {
			return eachField(data, "LoadBalancerStatus", func(field int, m *message) error {
				if field != loadBalancerIngress {
					return m.skip()
				}
				b, err := m.bytes()
				if err != nil {
					return err
				}
				in, err := loadBalancerIngressOf(b)
				if err != nil {
					return err
				}
				d.ingress = append(d.ingress, in)
				return nil
			})
		})
	})
}

// mergeAffinityConfig merges a SessionAffinityConfig message (field 1: clientIP, a ClientIPConfig
// whose field 1 is timeoutSeconds) into c.
func mergeAffinityConfig(c *api.SessionAffinityConfig, data []byte) error {
	return eachField(data, "SessionAffinityConfig", func(field int, m *message) error {
		if field != 1 {
			return m.skip()
		}
		return m.message(func(b []byte) error {
			if c.ClientIP == nil {
				c.ClientIP = &api.ClientIPConfig{}
			}
			return eachField(b, "ClientIPConfig", func(field int, m *message) error {
				if field != 1 {
					return m.skip()
				}
				v, err := m.varintField()
				t := int32(v)
				c.ClientIP.TimeoutSeconds = &t
				return err
			})
		})
	})
}

// loadBalancerIngressOf decodes a LoadBalancerIngress message (fields: 1 ip, 2 hostname, 3
// ipMode; 4, its ports, is not kept).
func loadBalancerIngressOf(data []byte) (api.LoadBalancerIngress, error) {
	var in api.LoadBalancerIngress
	err := eachField(data, "LoadBalancerIngress", func(field int, m *message) error {
		switch field {
		case 1, 2, 3:
			b, err := m.bytes()
			switch field {
			case 1:
				in.IP = string(b)
			case 2:
				in.Hostname = string(b)
			case 3:
				mode := api.LoadBalancerIPMode(b)
				in.IPMode = &mode
			}
			return err
		}
		return m.skip()
	})
	return in, err
}

// object is the api.Service of the fields read, with what compactFrom keeps of it by
// reference copied from the message and the rest views of it.
func (d *serviceFields) object() *api.Service {
	o := &d.obj
	*o = api.Service{}
	o.Namespace, o.Name, o.ResourceVersion = unsafeString(d.namespace), string(d.name), string(d.resourceVersion)
	o.UID = types.UID(unsafeString(d.uid))
	if _, ok := parseUID(o.UID); !ok {
		o.UID = types.UID(d.uid) // kept as it is
	}
	if d.hasCreated {
		o.CreationTimestamp = metav1.Unix(d.created, 0)
	}
	o.Labels = d.kept(&d.labels, d.objectMeta.labels, keptServiceLabels)
	o.Annotations = d.kept(&d.annotation, d.objectMeta.annotations, keptServiceAnnotations)
	spec := &o.Spec
	spec.Ports = d.ports
	spec.ClusterIP = string(d.clusterIP)
	if len(d.clusterIPs) == 1 && string(d.clusterIPs[0]) == spec.ClusterIP {
		d.ips = append(d.ips[:0], spec.ClusterIP) // not kept: OneClusterIP
		spec.ClusterIPs = d.ips
	} else {
		spec.ClusterIPs = copyStrings(d.clusterIPs)
	}
	spec.ExternalIPs = copyStrings(d.externalIPs)
	spec.Type = api.ServiceType(unsafeString(d.typ))
	spec.SessionAffinity = api.ServiceAffinity(unsafeString(d.affinity))
	spec.ExternalTrafficPolicy = api.ServiceExternalTrafficPolicy(unsafeString(d.externalTP))
	if d.hasInternal {
		d.itp = api.ServiceInternalTrafficPolicy(unsafeString(d.internalTP))
		spec.InternalTrafficPolicy = &d.itp
	}
	if d.hasDistrib {
		v := string(d.distribution)
		spec.TrafficDistribution = &v
	}
	spec.HealthCheckNodePort = d.healthCheck
	spec.SessionAffinityConfig = d.affinityConfig
	o.Status.LoadBalancer.Ingress = d.ingress
	return o
}

// The labels and annotations compactFrom keeps of a Service.
var (
	keptServiceLabels      = []string{service.ProxyNameLabel}
	keptServiceAnnotations = []string{service.TopologyAnnotation, service.ListenAnnotation}
)

// kept is the pairs whose keys are in keys, the last of a key winning as in the generated
// code's map, copied; nil when there are none. The map is reused: compactFrom copies from it.
func (d *serviceFields) kept(m *map[string]string, pairs []pair, keys []string) map[string]string {
	var out map[string]string
	for _, p := range pairs {
		for _, k := range keys {
			if string(p.key) != k {
				continue
			}
			if out == nil {
				if *m == nil {
					*m = map[string]string{}
				}
				out = *m
				clear(out)
			}
			out[k] = string(p.value)
		}
	}
	return out
}

// copyStrings is bs as strings; nil when empty.
func copyStrings(bs [][]byte) []string {
	if len(bs) == 0 {
		return nil
	}
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}
