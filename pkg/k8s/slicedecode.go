package k8s

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// EndpointSlices of the informers' lists are decoded straight into the compact EndpointSlice, as
// Nodes are (nodedecode.go): 10,000 slices of 15 endpoints decoded as the API's EndpointSlice
// first were ~150,000 Endpoint structs, each with its address slice, strings and pointers, all
// garbage once compacted, at the agent's start. Unmarshal is held to what compactSlice keeps of
// the generated code's EndpointSlice for the same bytes (TestSliceUnmarshalAsCompactSlice,
// FuzzSliceUnmarshal).

// Unmarshal sets s to the EndpointSlice message data (the protobuf encoding of a
// discovery/v1 EndpointSlice) as the cache keeps it (compactSlice). It copies what it keeps:
// data may be reused.
func (s *EndpointSlice) Unmarshal(data []byte) error {
	d := sliceFieldsPool.Get().(*sliceFields)
	defer func() {
		d.reset()
		sliceFieldsPool.Put(d)
	}()
	if err := d.slice(data); err != nil {
		return fmt.Errorf("decoding an EndpointSlice: %w", err)
	}
	c, err := d.compact()
	if err != nil {
		return fmt.Errorf("decoding an EndpointSlice: %w", err)
	}
	*s = c
	return nil
}

// sliceFields are the fields of an EndpointSlice message that EndpointSlice keeps, as read; the
// endpoints are their messages, decoded once their count is known.
type sliceFields struct {
	objectMeta
	addressType []byte
	ports       []SlicePort
	endpoints   [][]byte
	hints       []byte // scratch: an endpoint's zone hints joined
}

var sliceFieldsPool = sync.Pool{New: func() any { return &sliceFields{} }}

func (d *sliceFields) reset() {
	clear(d.ports)
	clear(d.endpoints)
	*d = sliceFields{objectMeta: d.objectMeta.reset(), ports: d.ports[:0], endpoints: d.endpoints[:0], hints: d.hints[:0]}
}

// Field numbers, from k8s.io/api/discovery/v1 generated.proto.
const (
	sliceMetadata, sliceEndpoints, slicePorts, sliceAddressType = 1, 2, 3, 4

	portName, portProtocol, portNumber = 1, 2, 3

	endpointAddresses, endpointConditions, endpointNodeName, endpointZone, endpointHints = 1, 2, 6, 7, 8

	conditionReady, conditionServing, conditionTerminating = 1, 2, 3

	hintsForZones, forZoneName = 1, 1
)

func (d *sliceFields) slice(data []byte) error {
	return eachField(data, "EndpointSlice", func(field int, m *message) (err error) {
		switch field {
		case sliceMetadata:
			return m.message(d.objectMeta.decode)
		case sliceEndpoints:
			b, err := m.bytes()
			d.endpoints = append(d.endpoints, b)
			return err
		case slicePorts:
			return m.message(d.port)
		case sliceAddressType:
			d.addressType, err = m.bytes()
			return err
		}
		return m.skip()
	})
}

// port appends the port to d.ports when it has a number, as compactSlice keeps ports.
func (d *sliceFields) port(data []byte) error {
	var name, protocol []byte
	var port int32
	var hasPort bool
	err := eachField(data, "EndpointPort", func(field int, m *message) (err error) {
		switch field {
		case portName:
			name, err = m.bytes()
		case portProtocol:
			protocol, err = m.bytes()
		case portNumber:
			var v uint64
			v, err = m.varintField()
			port, hasPort = int32(v), true
		default:
			err = m.skip()
		}
		return err
	})
	if err != nil || !hasPort {
		return err
	}
	d.ports = append(d.ports, newSlicePort(unsafeString(name), unsafeString(protocol), port))
	return nil
}

// compact is the EndpointSlice of the fields read, as compactSlice makes it of a
// api.EndpointSlice.
func (d *sliceFields) compact() (EndpointSlice, error) {
	s := EndpointSlice{
		Namespace:       interned(unsafeString(d.namespace)),
		Name:            string(d.name),
		ResourceVersion: string(d.resourceVersion),
		addressType:     handleOf(unsafeString(d.addressType)),
	}
	var svc []byte
	for _, p := range d.labels { // the last of a key wins, as in the map the generated code makes
		switch string(p.key) {
		case api.LabelServiceName:
			svc = p.value
		case api.IsHeadlessService:
			s.Headless = true
		}
	}
	if strings.HasPrefix(s.Name, unsafeString(svc)) {
		s.ServiceName = s.Name[:len(svc)] // the usual "<service>-<suffix>": one copy of the bytes
	} else {
		s.ServiceName = string(svc)
	}
	if len(d.ports) > 0 {
		s.Ports = append(make([]SlicePort, 0, len(d.ports)), d.ports...)
	}
	if s.AddressType() != api.AddressTypeIPv4 || s.Headless {
		return s, nil
	}
	for _, data := range d.endpoints {
		ep, ok, err := d.endpoint(data)
		if err != nil {
			return EndpointSlice{}, err
		}
		if !ok {
			continue
		}
		if s.Endpoints == nil {
			s.Endpoints = make([]SliceEndpoint, 0, len(d.endpoints))
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s, nil
}

// endpoint is the Endpoint message data as compactSlice keeps it; false when the model would
// skip it (its first address is not IPv4).
func (d *sliceFields) endpoint(data []byte) (SliceEndpoint, bool, error) {
	var first, node, zone []byte
	var hasAddress bool
	// The conditions ready, serving, terminating: their values, and whether the message set them.
	var cond, condSet [3]bool
	d.hints = d.hints[:0]
	var hinted bool
	err := eachField(data, "Endpoint", func(field int, m *message) (err error) {
		switch field {
		case endpointAddresses:
			var b []byte
			if b, err = m.bytes(); err == nil && !hasAddress {
				first, hasAddress = b, true
			}
		case endpointConditions:
			return m.message(func(b []byte) error {
				return eachField(b, "EndpointConditions", func(field int, m *message) error {
					if field < conditionReady || field > conditionTerminating {
						return m.skip()
					}
					v, err := m.varintField()
					cond[field-1], condSet[field-1] = v != 0, true
					return err
				})
			})
		case endpointNodeName:
			node, err = m.bytes()
		case endpointZone:
			zone, err = m.bytes()
		case endpointHints:
			return m.message(func(b []byte) error {
				return eachField(b, "EndpointHints", func(field int, m *message) error {
					if field != hintsForZones {
						return m.skip()
					}
					return m.message(func(b []byte) error {
						var name []byte
						err := eachField(b, "ForZone", func(field int, m *message) (err error) {
							if field != forZoneName {
								return m.skip()
							}
							name, err = m.bytes()
							return err
						})
						if hinted {
							d.hints = append(d.hints, ',')
						}
						d.hints, hinted = append(d.hints, name...), true
						return err
					})
				})
			})
		default:
			err = m.skip()
		}
		return err
	})
	if err != nil || !hasAddress {
		return SliceEndpoint{}, false, err
	}
	ip, perr := netip.ParseAddr(unsafeString(first))
	if perr != nil || !ip.Is4() {
		return SliceEndpoint{}, false, nil
	}
	ep := SliceEndpoint{Address: ip.As4()}
	ep.at = handleOf(placement{node: unsafeString(node), zone: unsafeString(zone), hints: unsafeString(d.hints)})
	ready, serving, terminating := conditionReady-1, conditionServing-1, conditionTerminating-1
	ep.Ready = !condSet[ready] || cond[ready]
	ep.Serving = ep.Ready
	if condSet[serving] {
		ep.Serving = cond[serving]
	}
	ep.Terminating = condSet[terminating] && cond[terminating]
	return ep, true, nil
}
