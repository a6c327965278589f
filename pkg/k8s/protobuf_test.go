package k8s

import (
	"bytes"
	"reflect"
	"testing"
)

// unmarshaler is a pointer to T that decodes itself from protobuf.
type unmarshaler[T any] interface {
	*T
	Unmarshal([]byte) error
}

// asGenerated decodes data with a decoder of this package (into a C) and with the generated code
// (into a G), and fails t when both decode it and the first is not what compact keeps of the
// second: the contract of Node.Unmarshal and EndpointSlice.Unmarshal. It returns both errors.
func asGenerated[G, C any, GP unmarshaler[G], CP unmarshaler[C]](t *testing.T, data []byte, compact func(GP) CP) (err, generatedErr error) {
	t.Helper()
	got := CP(new(C))
	err = got.Unmarshal(data)
	generated := GP(new(G))
	generatedErr = generated.Unmarshal(data)
	if err == nil && generatedErr == nil {
		if want := compact(generated); !reflect.DeepEqual(got, want) {
			t.Errorf("decoded:\n%#v\nwhat the cache keeps of the generated code's object:\n%#v", *got, *want)
		}
	}
	// What the generated code decodes, the decoder must not refuse (an object the API server
	// sent would be lost); the other way round is allowed: it skips fields it does not keep by
	// their lengths, where the generated code checks their contents.
	if err != nil && generatedErr == nil {
		t.Errorf("refused %q (%v), which the generated code decodes", data, err)
	}
	return err, generatedErr
}

// checkCuts decodes every cut of data with both (asGenerated): a cut one refuses, the other
// refuses too (cuts at a field's boundary are whole messages of fewer fields, which both accept).
func checkCuts[G, C any, GP unmarshaler[G], CP unmarshaler[C]](t *testing.T, data []byte, compact func(GP) CP) {
	t.Helper()
	for i := 1; i < len(data); i++ {
		if err, generatedErr := asGenerated(t, data[:i], compact); (err != nil) != (generatedErr != nil) {
			t.Fatalf("cut at %d of %d: decoded with %v; the generated code: %v", i, len(data), err, generatedErr)
		}
	}
}

// marshalAll is each case's protobuf encoding, by name.
func marshalAll[T interface{ Marshal() ([]byte, error) }](tb testing.TB, cases map[string]T) map[string][]byte {
	tb.Helper()
	encoded := make(map[string][]byte, len(cases))
	for name, o := range cases {
		data, err := o.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		encoded[name] = data
	}
	return encoded
}

// checkAllAsGenerated holds each encoding to asGenerated, and each pair's two encodings one after
// the other (one message with its fields repeated, which protobuf merges); both decoders must
// accept every one.
func checkAllAsGenerated[G, C any, GP unmarshaler[G], CP unmarshaler[C]](t *testing.T, encoded map[string][]byte, pairs [][2]string, compact func(GP) CP) {
	t.Helper()
	check := func(t *testing.T, data []byte) {
		t.Helper()
		if err, generatedErr := asGenerated(t, data, compact); err != nil || generatedErr != nil {
			t.Fatal(err, generatedErr)
		}
	}
	for name, data := range encoded {
		t.Run(name, func(t *testing.T) { check(t, data) })
	}
	for _, pair := range pairs {
		t.Run(pair[0]+" then "+pair[1], func(t *testing.T) {
			check(t, append(bytes.Clone(encoded[pair[0]]), encoded[pair[1]]...))
		})
	}
}
