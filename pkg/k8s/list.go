package k8s

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/runtime"
)

// The informers' lists are decoded an item at a time, each item trimmed (TrimForCache) as soon
// as it is decoded. The reflectors' first lists ask for resourceVersion 0, which the API server
// answers from its watch cache in one response whatever the page size (it ignores the limit
// then): decoded whole, 5,000 kubelet-like Nodes or 10,000 EndpointSlices of 15 endpoints are
// ~20 MB of protobuf plus ~25-30 MB of decoded objects, all alive until the informer's store has
// taken the list, and the informers list at once. Decoded as a stream, a list costs its trimmed
// items and one item's bytes. Nodes, Services and EndpointSlices are decoded straight into what
// the cache keeps (Node.Unmarshal, Service.Unmarshal, EndpointSlice.Unmarshal). This node's Pods
// and the domain ConfigMap, few, are asked for in JSON (Client.coreJSON) and decoded whole.
//
// The API server's protobuf answer is the magic "k8s\x00" and a runtime.Unknown message whose
// raw field holds the list message: its metadata (field 1), then its items (field 2), each a
// length-delimited message. Anything else (JSON from a proxy that does not speak protobuf) is
// read whole and decoded as package api's list, whose items the informer's transform trims.

// protobufMagic opens every protobuf-encoded object of the Kubernetes API.
var protobufMagic = []byte("k8s\x00")

// listItem is a runtime.Object that unmarshals itself from protobuf.
type listItem interface {
	runtime.Object
	Unmarshal(data []byte) error
}

// newListItem is the item type of resource's lists, nil for a resource the agent does not list.
func newListItem(resource Resource) func() listItem {
	switch resource {
	case Nodes:
		return func() listItem { return &Node{} } // decoded as the cache keeps it (nodedecode.go)
	case Services:
		return func() listItem { return &Service{} } // decoded as the cache keeps it (servicedecode.go)
	case EndpointSlices:
		return func() listItem { return &EndpointSlice{} } // decoded as the cache keeps it (slicedecode.go)
	}
	return nil
}

// maxItemBytes bounds one item of a list: the API server stores objects of at most 1.5 MiB
// (etcd's request limit); anything much larger is a broken stream.
const maxItemBytes = 64 << 20

// decodeList reads a list of resource from body: protobuf as a stream of trimmed items (a
// *metainternalversion.List of TrimForCache's objects), anything else whole with decoder.
func decodeList(body io.Reader, resource Resource, decoder runtime.Decoder) (runtime.Object, error) {
	r := bufio.NewReaderSize(body, 32<<10)
	magic, err := r.Peek(len(protobufMagic))
	newItem := newListItem(resource)
	if err != nil || !bytes.Equal(magic, protobufMagic) || newItem == nil {
		data, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("reading the list of %s: %w", resource, err)
		}
		obj, err := runtime.Decode(decoder, data)
		if err != nil {
			return nil, fmt.Errorf("decoding the list of %s: %w", resource, err)
		}
		return obj, nil
	}
	_, _ = r.Discard(len(protobufMagic))
	list, err := decodeUnknown(r, newItem)
	if err != nil {
		return nil, fmt.Errorf("decoding the list of %s: %w", resource, err)
	}
	return list, nil
}

// decodeUnknown reads the runtime.Unknown envelope (fields: 1 typeMeta, 2 raw, 3
// contentEncoding, 4 contentType) and decodes its raw field as a list.
func decodeUnknown(r *bufio.Reader, newItem func() listItem) (*metainternalversion.List, error) {
	var list *metainternalversion.List
	for {
		field, n, err := nextBytesField(r, func(field int) bool { return field == 2 || field == 3 })
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch field {
		case 2:
			if list, err = decodeListMessage(&io.LimitedReader{R: r, N: int64(n)}, newItem); err != nil {
				return nil, err
			}
		case 3:
			encoding := make([]byte, n)
			if _, err := io.ReadFull(r, encoding); err != nil {
				return nil, unexpected(err)
			}
			if len(encoding) > 0 {
				return nil, fmt.Errorf("unsupported content encoding %q", encoding)
			}
		}
	}
	if list == nil {
		return nil, errors.New("no list in the answer")
	}
	return list, nil
}

// decodeListMessage reads a list message (fields: 1 metadata, 2 items) from r, to its end.
func decodeListMessage(lr *io.LimitedReader, newItem func() listItem) (*metainternalversion.List, error) {
	r := bufio.NewReader(lr) // bytes and varints; the limit ends the message
	list := &metainternalversion.List{}
	var buf []byte
	for {
		field, n, err := nextBytesField(r, func(field int) bool { return field == 1 || field == 2 })
		if errors.Is(err, io.EOF) {
			return list, nil
		}
		if err != nil {
			return nil, err
		}
		if cap(buf) < n {
			buf = make([]byte, n, max(n, 2*cap(buf)))
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, unexpected(err)
		}
		if field == 1 {
			if err := list.ListMeta.Unmarshal(buf); err != nil {
				return nil, fmt.Errorf("list metadata: %w", err)
			}
			continue
		}
		// Unmarshal copies what it keeps (strings, bytes): buf is reused for the next item.
		item := newItem()
		if err := item.Unmarshal(buf); err != nil {
			return nil, fmt.Errorf("item %d: %w", len(list.Items), err)
		}
		trimmed, err := TrimForCache(item)
		if err != nil {
			return nil, err
		}
		obj, ok := trimmed.(runtime.Object)
		if !ok {
			return nil, fmt.Errorf("item %d: trimmed to %T, not an API object", len(list.Items), trimmed)
		}
		list.Items = append(list.Items, obj)
	}
}

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// readTag reads a field's key; io.EOF only at the end of r before any byte of it.
func readTag(r *bufio.Reader) (field, wireType int, err error) {
	key, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, 0, io.EOF
		}
		return 0, 0, unexpected(err)
	}
	return int(key >> 3), int(key & 7), nil
}

// nextBytesField reads up to the next length-delimited field that keep accepts, skipping every
// other field, and returns its number and length; io.EOF at the end of r between fields.
func nextBytesField(r *bufio.Reader, keep func(field int) bool) (field, n int, err error) {
	for {
		field, wireType, err := readTag(r)
		if err != nil {
			return 0, 0, err
		}
		if wireType != wireBytes || !keep(field) {
			if err := skipField(r, wireType); err != nil {
				return 0, 0, err
			}
			continue
		}
		n, err := readLength(r)
		return field, n, err
	}
}

func readLength(r *bufio.Reader) (int, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, unexpected(err)
	}
	if n > maxItemBytes {
		return 0, fmt.Errorf("a field of %d bytes", n)
	}
	return int(n), nil
}

func skipField(r *bufio.Reader, wireType int) error {
	var n int
	switch wireType {
	case wireVarint:
		_, err := binary.ReadUvarint(r)
		return unexpected(err)
	case wireFixed64:
		n = 8
	case wireFixed32:
		n = 4
	case wireBytes:
		var err error
		if n, err = readLength(r); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported protobuf wire type %d", wireType)
	}
	_, err := r.Discard(n)
	return unexpected(err)
}

// unexpected turns the end of the stream inside a field into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
