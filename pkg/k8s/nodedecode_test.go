package k8s

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// decodeNodeTestCases are Nodes with every field Node keeps set in the ways that matter (a
// hostname label and address equal to the name, pod CIDRs equal to spec.podCIDR or not, taints
// with a time, annotations of ours and others, empty keys and values), beside the fields it
// skips.
func decodeNodeTestCases() map[string]*corev1.Node {
	deleting := fullNode()
	deleting.DeletionTimestamp = &metav1.Time{}
	otherCIDRs := fullNode()
	otherCIDRs.Spec.PodCIDRs = []string{"10.244.7.0/24", "fd00::/64"}
	timed := fullNode()
	added := metav1.Unix(1700000100, 0)
	timed.Spec.Taints = append(timed.Spec.Taints, corev1.Taint{Key: "k", Value: "v", Effect: corev1.TaintEffectNoExecute, TimeAdded: &added})
	odd := fullNode()
	odd.Labels[""] = ""
	odd.Labels["empty"] = ""
	odd.Annotations[PublicIPAnnotation] = ""
	odd.Status.Addresses = append(odd.Status.Addresses, corev1.NodeAddress{})
	bare := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}}
	bookmark := &corev1.Node{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "1234", Annotations: map[string]string{"k8s.io/initial-events-end": "true"}}}
	kubelet := kubeletNode(7)
	return map[string]*corev1.Node{
		"full": fullNode(), "kubelet": &kubelet, "deleting": deleting, "other pod CIDRs": otherCIDRs,
		"taint with a time": timed, "empty strings": odd, "bare": bare, "bookmark": bookmark, "empty": {},
	}
}

// TestNodeUnmarshalAsCompactNode checks that Node.Unmarshal keeps of a Node message what
// nodeOf keeps of the corev1.Node the generated code decodes from it: for single messages,
// and for messages that repeat fields (two Nodes' encodings one after the other, which protobuf
// decodes as one message merged).
func TestNodeUnmarshalAsCompactNode(t *testing.T) {
	encoded := marshalAll(t, decodeNodeTestCases())
	checkAllAsGenerated(t, encoded, [][2]string{{"full", "kubelet"}, {"kubelet", "full"}, {"full", "empty strings"},
		{"deleting", "bare"}, {"other pod CIDRs", "taint with a time"}, {"full", "full"}}, nodeOf)
	// Field numbers are 32 bits, as the generated code reads them: 2^32+1 is field 1 (the name),
	// in a message and in a map entry (the label's key).
	wide := func(field uint64, value string) []byte {
		b := binary.AppendUvarint(nil, field<<3|wireBytes)
		return append(binary.AppendUvarint(b, uint64(len(value))), value...)
	}
	label := string(wide(1<<32+1, "key")) + string(wide(2, "value"))
	meta := string(wide(1<<32+1, "wide")) + string(wide(metaLabels, label))
	t.Run("field numbers past 32 bits", func(t *testing.T) {
		if err, generatedErr := asGenerated(t, wide(nodeMetadata, meta), nodeOf); err != nil || generatedErr != nil {
			t.Fatal(err, generatedErr)
		}
	})
}

// TestNodeUnmarshalRefusesBrokenMessages: a message cut short or with a broken length is an
// error, never a Node made of part of it.
func TestNodeUnmarshalRefusesBrokenMessages(t *testing.T) {
	data, err := fullNode().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	checkCuts(t, data, nodeOf)
	for _, bad := range [][]byte{
		{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // metadata of 2^64-1 bytes
		{0x0a, 0x05, 0x0a}, // metadata longer than the message
		{0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, // a varint past 64 bits
		{0x0c},       // an end group with no group
		{0x00, 0x01}, // field 0
		{0x09, 0x01}, // metadata as a fixed64
	} {
		var n Node
		if err := n.Unmarshal(bad); err == nil {
			t.Errorf("% x: no error", bad)
		}
	}
}

// FuzzNodeUnmarshal: on any bytes, Unmarshal does not panic, and where both it and the
// generated code decode them it keeps what nodeOf keeps of the generated code's Node.
func FuzzNodeUnmarshal(f *testing.F) {
	for _, data := range marshalAll(f, decodeNodeTestCases()) {
		f.Add(data)
	}
	f.Add([]byte("0\xff\xff\xff\xff\xff\xff\xff\xff\xff0")) // a varint of 10 bytes whose last is over 1: the generated code drops the bits beyond 64
	f.Fuzz(func(t *testing.T, data []byte) { asGenerated(t, data, nodeOf) })
}

// TestNodeWatchDecoder checks the core client's decoding of watch events' objects: a Node in
// the API's protobuf envelope becomes a Node, as does a JSON one; what is decoded into an
// object and other kinds go to the wrapped decoder as before.
func TestNodeWatchDecoder(t *testing.T) {
	codecs := serializer.NewCodecFactory(Scheme)
	generated := runtime.NewScheme() // the API server's types, to encode what it sends
	if err := corev1.AddToScheme(generated); err != nil {
		t.Fatal(err)
	}
	generatedCodecs := serializer.NewCodecFactory(generated)
	encode := func(mediaType string, obj runtime.Object) []byte {
		info, ok := runtime.SerializerInfoForMediaType(generatedCodecs.SupportedMediaTypes(), mediaType)
		if !ok {
			t.Fatal(mediaType)
		}
		data, err := runtime.Encode(generatedCodecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion), obj)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	ns := nodeDecoding{codecs.WithoutConversion()}
	decoderFor := func(mediaType string) runtime.Decoder {
		info, _ := runtime.SerializerInfoForMediaType(ns.SupportedMediaTypes(), mediaType)
		return ns.DecoderToVersion(info.Serializer, corev1.SchemeGroupVersion)
	}
	decoder := decoderFor(runtime.ContentTypeProtobuf)

	node := fullNode()
	data := encode(runtime.ContentTypeProtobuf, node)
	obj, gvk, err := decoder.Decode(data, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *gvk != nodeKind {
		t.Errorf("kind %v, want %v", gvk, nodeKind)
	}
	if got, want := obj, nodeOf(fullNode()); !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %#v, want %#v", got, want)
	}

	// Into a Node (GetNode): the wrapped decoder's, which decodes it the same way.
	into := &Node{}
	if obj, _, err = decoder.Decode(data, nil, into); err != nil || obj != into || !reflect.DeepEqual(into, nodeOf(fullNode())) {
		t.Errorf("decoded into a Node: %T %v: %#v", obj, err, into)
	}
	// Another kind, and an error event's Status.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "default"}}
	if obj, _, err = decoder.Decode(encode(runtime.ContentTypeProtobuf, svc), nil, nil); err != nil {
		t.Fatal(err)
	} else if !reflect.DeepEqual(obj, serviceOf(svc)) {
		t.Errorf("a Service decoded as %#v", obj)
	}
	status := &metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonExpired, Code: 410}
	if obj, _, err = decoder.Decode(encode(runtime.ContentTypeProtobuf, status), nil, nil); err != nil {
		t.Fatal(err)
	} else if s, ok := obj.(*metav1.Status); !ok || s.Code != 410 {
		t.Errorf("a Status decoded as %#v", obj)
	}

	// Not protobuf, not a Node, or a content encoding: the wrapped decoder's answer.
	for name, data := range map[string][]byte{
		"json":      encode(runtime.ContentTypeJSON, node),
		"truncated": data[:len(protobufMagic)+3],
		"encoded":   bytes.Replace(data, []byte("Node"), []byte("Nope"), 1),
	} {
		if _, ok := protobufNode(data); ok {
			t.Errorf("%s: taken for a protobuf Node", name)
		}
	}
	// A JSON Node (a proxy that answers JSON) is a Node too, as the informer takes only those;
	// and so it is decoded into a Node.
	json := decoderFor(runtime.ContentTypeJSON)
	if obj, _, err := json.Decode(encode(runtime.ContentTypeJSON, node), nil, nil); err != nil {
		t.Fatal(err)
	} else if got, want := obj, nodeOf(fullNode()); !reflect.DeepEqual(got, want) {
		t.Errorf("a JSON Node decoded as %#v, want %#v", got, want)
	}
	into = &Node{}
	if obj, _, err := json.Decode(encode(runtime.ContentTypeJSON, node), nil, into); err != nil || obj != into || !reflect.DeepEqual(into, nodeOf(fullNode())) {
		t.Errorf("a JSON Node decoded into a Node: %T %v: %#v", obj, err, into)
	}
}

// TestNodeUnmarshalKeepsNoBytesOfItsInput: the strings of a decoded Node are its own, so the
// buffer it was decoded from can be reused (decodeList reuses its buffer for every item).
func TestNodeUnmarshalKeepsNoBytesOfItsInput(t *testing.T) {
	data, err := fullNode().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var n Node
	if err := n.Unmarshal(data); err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 'x'
	}
	if !reflect.DeepEqual(&n, nodeOf(fullNode())) {
		t.Errorf("after its input was overwritten: %#v", n)
	}
}
