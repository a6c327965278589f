package k8s

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// Nodes are decoded from the API server's protobuf straight into the compact Node, without the
// API's Node in between: a kubelet's Node is mostly status (images, conditions, nodeInfo,
// capacity), which its heartbeats rewrite and the agent never reads. Decoded whole, a kubelet's
// Node event took ~22 us and left 16 KB of garbage (BenchmarkNodeEventDecode), and the first list
// of 5,000 Nodes 80 MB: garbage the collector ran for, more often at the agent's steady GOGC
// (steadyGCPercent in pkg/agent). Node.Unmarshal reads the fields Node keeps and skips the
// others by their lengths (~3.5 us, 1.3 KB); the informers' lists (decodeList) and their watches
// (the core client's decoder, nodeWatchDecoder) use it.
//
// It gives what compactNode gives for the API's Node the generated code decodes from the same
// bytes, including where a message repeats a field (the last string wins, repeated fields and
// map entries add up, the last map entry of a key wins): TestNodeUnmarshalAsCompactNode and
// FuzzNodeUnmarshal hold it to that.

// Unmarshal sets n to the Node message data (the protobuf encoding of a Node of the API) as the
// cache keeps it (compactNode). It copies what it keeps: data may be reused.
func (n *Node) Unmarshal(data []byte) error {
	d := nodeFieldsPool.Get().(*nodeFields)
	defer func() {
		d.reset()
		nodeFieldsPool.Put(d)
	}()
	if err := d.node(data); err != nil {
		return fmt.Errorf("decoding a Node: %w", err)
	}
	*n = d.compact()
	return nil
}

// nodeFields are the fields of a Node message that Node keeps, as they were read: the byte
// slices are data's.
type nodeFields struct {
	objectMeta
	podCIDR   []byte
	podCIDRs  [][]byte
	taints    []api.Taint
	addresses []api.NodeAddress
}

var nodeFieldsPool = sync.Pool{New: func() any { return &nodeFields{} }}

// reset empties d for its next Node, keeping its slices' arrays but nothing they pointed to.
func (d *nodeFields) reset() {
	clear(d.podCIDRs)
	*d = nodeFields{objectMeta: d.objectMeta.reset(), podCIDRs: d.podCIDRs[:0]}
}

// Field numbers, from k8s.io/api/core/v1 generated.proto.
const (
	nodeMetadata, nodeSpec, nodeStatus = 1, 2, 3

	specPodCIDR, specTaints, specPodCIDRs = 1, 5, 7

	statusAddresses = 5
)

func (d *nodeFields) node(data []byte) error {
	return eachField(data, "Node", func(field int, m *message) error {
		switch field {
		case nodeMetadata:
			return m.message(d.objectMeta.decode)
		case nodeSpec:
			return m.message(d.spec)
		case nodeStatus:
			return m.message(d.status)
		}
		return m.skip()
	})
}

func (d *nodeFields) spec(data []byte) error {
	return eachField(data, "NodeSpec", func(field int, m *message) error {
		switch field {
		case specPodCIDR:
			b, err := m.bytes()
			d.podCIDR = b
			return err
		case specPodCIDRs:
			b, err := m.bytes()
			d.podCIDRs = append(d.podCIDRs, b)
			return err
		case specTaints:
			return m.message(func(b []byte) error {
				t, err := taintOf(b)
				d.taints = append(d.taints, t)
				return err
			})
		}
		return m.skip()
	})
}

func (d *nodeFields) status(data []byte) error {
	return eachField(data, "NodeStatus", func(field int, m *message) error {
		if field != statusAddresses {
			return m.skip()
		}
		return m.message(func(b []byte) error {
			a, err := nodeAddressOf(b)
			d.addresses = append(d.addresses, a)
			return err
		})
	})
}

// taintOf decodes a Taint message (fields: 1 key, 2 value, 3 effect, 4 timeAdded).
func taintOf(data []byte) (api.Taint, error) {
	var t api.Taint
	err := eachField(data, "Taint", func(field int, m *message) error {
		switch field {
		case 1, 2, 3:
			b, err := m.bytes()
			switch field {
			case 1:
				t.Key = string(b)
			case 2:
				t.Value = string(b)
			case 3:
				t.Effect = api.TaintEffect(b)
			}
			return err
		case 4:
			return m.message(func(b []byte) error {
				if t.TimeAdded == nil {
					t.TimeAdded = &metav1.Time{}
				}
				return t.TimeAdded.Unmarshal(b)
			})
		}
		return m.skip()
	})
	return t, err
}

// nodeAddressOf decodes a NodeAddress message (fields: 1 type, 2 address).
func nodeAddressOf(data []byte) (api.NodeAddress, error) {
	var a api.NodeAddress
	err := eachField(data, "NodeAddress", func(field int, m *message) error {
		switch field {
		case 1:
			b, err := m.bytes()
			a.Type = api.NodeAddressType(b)
			return err
		case 2:
			b, err := m.bytes()
			a.Address = string(b)
			return err
		}
		return m.skip()
	})
	return a, err
}

// compact is the Node of the fields read, as compactNode makes it of an api.Node.
func (d *nodeFields) compact() Node {
	n := Node{Name: string(d.name), ResourceVersion: string(d.resourceVersion), UID: types.UID(d.uid), Deleting: d.deleting}
	var ours int
	for _, p := range d.annotations {
		if ourAnnotation(unsafeString(p.key)) {
			ours++
		}
	}
	if ours > 0 {
		annotations := make(KeyValues, 0, ours) // kept: no room to spare
		for _, p := range d.annotations {
			if ourAnnotation(unsafeString(p.key)) {
				annotations = append(annotations, KeyValue{interned(unsafeString(p.key)), string(p.value)})
			}
		}
		n.Annotations = lastOfEachKey(annotations)
	}
	if len(d.labels) > 0 {
		labels := make(KeyValues, 0, len(d.labels))
		for _, p := range d.labels {
			v := nameValue
			if !bytes.Equal(p.value, d.name) {
				v = interned(unsafeString(p.value))
			}
			labels = append(labels, KeyValue{interned(unsafeString(p.key)), v})
		}
		n.Labels = NodeLabels{set: internLabelSet(lastOfEachKey(labels)), name: n.Name}
	}
	n.Spec.PodCIDR = string(d.podCIDR)
	if len(d.podCIDRs) > 0 {
		n.Spec.PodCIDRs = make([]string, len(d.podCIDRs))
		for i, b := range d.podCIDRs {
			n.Spec.PodCIDRs[i] = string(b)
		}
		if n.Spec.PodCIDRs[0] == n.Spec.PodCIDR {
			n.Spec.PodCIDRs[0] = n.Spec.PodCIDR // one copy, as compactNode keeps it
		}
	}
	n.Spec.Taints = d.taints // decoded for this Node alone: reset does not keep them
	if len(d.addresses) > 0 {
		n.Status.Addresses = make([]api.NodeAddress, len(d.addresses))
		for i, a := range d.addresses {
			if a.Address == n.Name {
				a.Address = n.Name
			}
			a.Type = api.NodeAddressType(interned(string(a.Type)))
			n.Status.Addresses[i] = a
		}
	}
	return n
}

// lastOfEachKey sorts kv by key and keeps, of the pairs with the same key, the last: what a
// map made of them in order would hold. Nil when kv is empty.
func lastOfEachKey(kv KeyValues) KeyValues {
	if len(kv) == 0 {
		return nil
	}
	slices.SortStableFunc(kv, byKey)
	out := kv[:0]
	for i, e := range kv {
		if i+1 < len(kv) && kv[i+1].Key == e.Key {
			continue
		}
		out = append(out, e)
	}
	return out
}

// nodeWatchDecoder decodes the Nodes of the core client's watch events with Node.Unmarshal, and
// everything else with the decoder it wraps: a watch event's object is decoded with no type to
// decode into. The wrapped decoder would decode a Node in protobuf the same way (the Scheme
// names Node for the kind), after copying the message out of its envelope. A Node in JSON it
// decodes by way of the API's (Node.UnmarshalJSON).
type nodeWatchDecoder struct{ runtime.Decoder }

var nodeKind = api.CoreV1.WithKind("Node")

func (d nodeWatchDecoder) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if into == nil {
		if raw, ok := protobufNode(data); ok {
			n := &Node{}
			if err := n.Unmarshal(raw); err != nil {
				return nil, nil, err
			}
			gvk := nodeKind
			return n, &gvk, nil
		}
	}
	// Not protobuf (a proxy's JSON: YurtHub may answer so): the Scheme decodes a Node as one too.
	return d.Decoder.Decode(data, defaults, into)
}

// protobufNode is the Node message of data when data is a v1 Node in the API's protobuf
// envelope (the magic, then a runtime.Unknown: 1 typeMeta {1 apiVersion, 2 kind}, 2 raw,
// 3 contentEncoding, 4 contentType) with no content encoding; false for anything else, which
// the wrapped decoder decodes (or refuses) as before.
func protobufNode(data []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(data, protobufMagic)
	if !ok {
		return nil, false
	}
	var apiVersion, kind, raw, encoding, contentType []byte
	err := eachField(rest, "Unknown", func(field int, m *message) (err error) {
		switch field {
		case 1:
			return m.message(func(b []byte) error {
				return eachField(b, "TypeMeta", func(field int, m *message) (err error) {
					switch field {
					case 1:
						apiVersion, err = m.bytes()
					case 2:
						kind, err = m.bytes()
					default:
						err = m.skip()
					}
					return err
				})
			})
		case 2:
			raw, err = m.bytes()
		case 3:
			encoding, err = m.bytes()
		case 4:
			contentType, err = m.bytes()
		default:
			err = m.skip()
		}
		return err
	})
	if err != nil || string(apiVersion) != "v1" || string(kind) != "Node" || len(encoding) > 0 ||
		(len(contentType) > 0 && !strings.EqualFold(string(contentType), runtime.ContentTypeProtobuf)) {
		return nil, false
	}
	return raw, true
}

// nodeDecoding is the core client's serializer, with nodeWatchDecoder for what it decodes.
type nodeDecoding struct{ runtime.NegotiatedSerializer }

func (s nodeDecoding) DecoderToVersion(decoder runtime.Decoder, gv runtime.GroupVersioner) runtime.Decoder {
	return nodeWatchDecoder{s.NegotiatedSerializer.DecoderToVersion(decoder, gv)}
}
