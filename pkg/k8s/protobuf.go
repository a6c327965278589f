package k8s

import (
	"errors"
	"fmt"
	"io"
	"unsafe"
)

// A reader of the API's protobuf messages for the objects the agent decodes straight into what
// its caches keep (nodedecode.go, slicedecode.go): fields are visited in order and read where
// kept, skipped by their lengths otherwise, with the generated code's rules where a message
// repeats a field (the last value wins, repeated fields and map entries add up).

// objectMeta is what the agent keeps of an object's metadata, as read: the byte slices are the
// message's.
type objectMeta struct {
	name, namespace, uid, resourceVersion []byte
	deleting                              bool
	labels, annotations                   []pair
	// created is the creationTimestamp's seconds when hasCreated (metav1.Time keeps no more);
	// an empty one, as for the zero time, leaves hasCreated false.
	created    int64
	hasCreated bool
}

type pair struct{ key, value []byte }

// reset is m emptied, keeping its slices' arrays but nothing they pointed to.
func (m *objectMeta) reset() objectMeta {
	clear(m.labels)
	clear(m.annotations)
	return objectMeta{labels: m.labels[:0], annotations: m.annotations[:0]}
}

// Field numbers of metav1.ObjectMeta, from k8s.io/apimachinery/pkg/apis/meta/v1 generated.proto.
const (
	metaName, metaNamespace, metaUID, metaResourceVersion = 1, 3, 5, 6
	metaCreationTimestamp, metaDeletionTimestamp          = 8, 9
	timeSeconds, timeNanos                                = 1, 2 // of a metav1.Timestamp
	metaLabels, metaAnnotations                           = 11, 12
)

func (d *objectMeta) decode(data []byte) error {
	return eachField(data, "ObjectMeta", func(field int, m *message) (err error) {
		switch field {
		case metaName:
			d.name, err = m.bytes()
		case metaNamespace:
			d.namespace, err = m.bytes()
		case metaUID:
			d.uid, err = m.bytes()
		case metaResourceVersion:
			d.resourceVersion, err = m.bytes()
		case metaCreationTimestamp:
			var b []byte
			if b, err = m.bytes(); err == nil {
				d.created, d.hasCreated, err = timestampSeconds(b)
			}
		case metaDeletionTimestamp:
			d.deleting = true
			_, err = m.bytes()
		case metaLabels:
			d.labels, err = m.mapEntry(d.labels)
		case metaAnnotations:
			d.annotations, err = m.mapEntry(d.annotations)
		default:
			err = m.skip()
		}
		return err
	})
}

// timestampSeconds reads a metav1.Time message as its Unmarshal does: an empty one is the zero
// time (ok false), and of the others only the seconds count.
func timestampSeconds(data []byte) (seconds int64, ok bool, err error) {
	if len(data) == 0 {
		return 0, false, nil
	}
	err = eachField(data, "Timestamp", func(field int, m *message) error {
		switch field {
		case timeSeconds:
			v, err := m.varintField()
			seconds = int64(v)
			return err
		case timeNanos:
			_, err := m.varintField()
			return err
		}
		return m.skip()
	})
	return seconds, err == nil, err
}

// unsafeString is b as a string without a copy, for a lookup or for interned (which copies what
// it keeps); it must not be kept, as b's bytes are reused.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// message is a protobuf message being read: what is left of it, from the value of its current
// field on.
type message struct {
	b        []byte
	wireType int
}

// Protobuf's group wire types (deprecated; skipped as the generated code skips them).
const (
	wireStartGroup = 3
	wireEndGroup   = 4
)

var (
	errVarint       = errors.New("a varint overflows 64 bits")
	errNegativeSize = errors.New("a negative length")
)

// eachField calls fn for each field of message data, with m at the field's value; fn consumes the
// value (m.bytes, m.message, m.mapEntry or m.skip).
func eachField(data []byte, name string, fn func(field int, m *message) error) error {
	m := &message{b: data}
	for len(m.b) > 0 {
		key, err := m.varint()
		if err != nil {
			return err
		}
		field, wireType := int(int32(key>>3)), int(key&7) // as the generated code reads a field number
		if wireType == wireEndGroup {
			return fmt.Errorf("proto: %s: wiretype end group for non-group", name)
		}
		if field <= 0 {
			return fmt.Errorf("proto: %s: illegal tag %d (wire type %d)", name, field, wireType)
		}
		m.wireType = wireType
		if err := fn(field, m); err != nil {
			return err
		}
	}
	return nil
}

// varint reads a varint as the generated code does: up to 10 bytes, the bits beyond 64 of the
// tenth dropped (binary.Uvarint refuses those), an 11th byte an overflow.
func (m *message) varint() (uint64, error) {
	var v uint64
	for i, shift := 0, uint(0); ; i, shift = i+1, shift+7 {
		if shift >= 64 {
			return 0, errVarint
		}
		if i >= len(m.b) {
			return 0, io.ErrUnexpectedEOF
		}
		b := m.b[i]
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			m.b = m.b[i+1:]
			return v, nil
		}
	}
}

// lengthDelimited is the next length-delimited value, whatever the wire type says (as the
// generated code reads a map entry's key and value).
func (m *message) lengthDelimited() ([]byte, error) {
	n, err := m.varint()
	if err != nil {
		return nil, err
	}
	if int(n) < 0 {
		return nil, errNegativeSize
	}
	if n > uint64(len(m.b)) {
		return nil, io.ErrUnexpectedEOF
	}
	v := m.b[:n:n]
	m.b = m.b[n:]
	return v, nil
}

// bytes is the value of a length-delimited field (a string, bytes or a message).
func (m *message) bytes() ([]byte, error) {
	if m.wireType != wireBytes {
		return nil, fmt.Errorf("proto: wrong wireType = %d for a length-delimited field", m.wireType)
	}
	return m.lengthDelimited()
}

// varintField is the value of a varint field (an integer or a bool).
func (m *message) varintField() (uint64, error) {
	if m.wireType != wireVarint {
		return 0, fmt.Errorf("proto: wrong wireType = %d for a varint field", m.wireType)
	}
	return m.varint()
}

// message reads an embedded message's field with fn.
func (m *message) message(fn func([]byte) error) error {
	b, err := m.bytes()
	if err != nil {
		return err
	}
	return fn(b)
}

// mapEntry appends the entry of a map<string, string> field to pairs. As in the generated code,
// a missing key or value is "", and fields 1 and 2 are read as strings whatever their wire type.
func (m *message) mapEntry(pairs []pair) ([]pair, error) {
	entry, err := m.bytes()
	if err != nil {
		return pairs, err
	}
	var p pair
	e := &message{b: entry}
	for len(e.b) > 0 {
		key, err := e.varint()
		if err != nil {
			return pairs, err
		}
		switch int32(key >> 3) {
		case 1:
			p.key, err = e.lengthDelimited()
		case 2:
			p.value, err = e.lengthDelimited()
		default:
			e.wireType = int(key & 7)
			err = e.skip()
		}
		if err != nil {
			return pairs, err
		}
	}
	return append(pairs, p), nil
}

// skip passes over the current field's value.
func (m *message) skip() error {
	switch m.wireType {
	case wireVarint:
		_, err := m.varint()
		return err
	case wireFixed64, wireFixed32:
		n := 8
		if m.wireType == wireFixed32 {
			n = 4
		}
		if len(m.b) < n {
			return io.ErrUnexpectedEOF
		}
		m.b = m.b[n:]
		return nil
	case wireBytes:
		_, err := m.lengthDelimited()
		return err
	case wireStartGroup:
		for depth := 1; depth > 0; {
			key, err := m.varint()
			if err != nil {
				return err
			}
			switch m.wireType = int(key & 7); m.wireType {
			case wireStartGroup:
				depth++
			case wireEndGroup:
				depth--
			default:
				if err := m.skip(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("proto: illegal wireType %d", m.wireType)
}
