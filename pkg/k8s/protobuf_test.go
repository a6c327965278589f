package k8s

import (
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
