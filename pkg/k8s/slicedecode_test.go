package k8s

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

// decodeSliceTestCases are EndpointSlices with what EndpointSlice keeps set in the ways that
// matter: conditions unset, false and true; endpoints whose first address is not IPv4, or
// without one; zone hints; ports without a number, name or protocol; a name that does not start
// with the Service's; headless and IPv6 slices (no endpoints kept); no labels at all.
func decodeSliceTestCases() map[string]*discoveryv1.EndpointSlice {
	bulk := bulkSlice(3)
	mixed := bulkSlice(4)
	mixed.Name = "other-name"
	mixed.Ports = append(mixed.Ports, discoveryv1.EndpointPort{Name: ptr.To("")}, discoveryv1.EndpointPort{Port: ptr.To[int32](-1)},
		discoveryv1.EndpointPort{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](53), AppProtocol: ptr.To("dns")})
	mixed.Endpoints[0].Conditions = discoveryv1.EndpointConditions{}
	mixed.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Terminating: ptr.To(true)}
	mixed.Endpoints[2].Conditions = discoveryv1.EndpointConditions{Serving: ptr.To(false)}
	mixed.Endpoints[3].Addresses = []string{"fd00::1", "10.0.0.1"}
	mixed.Endpoints[4].Addresses = nil
	mixed.Endpoints[5].Addresses = []string{"not an address"}
	mixed.Endpoints[6].Zone = ptr.To("zone-a")
	mixed.Endpoints[6].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-a"}, {Name: "zone-b"}},
		ForNodes: []discoveryv1.ForNode{{Name: "n"}}}
	mixed.Endpoints[7].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{}}}
	mixed.Endpoints[8].NodeName = nil
	mixed.Endpoints[9].Hostname = ptr.To("h")
	mixed.Endpoints[9].DeprecatedTopology = map[string]string{"k": "v"}
	headless := bulkSlice(5)
	headless.Labels[corev1.IsHeadlessService] = ""
	ipv6 := bulkSlice(6)
	ipv6.AddressType = discoveryv1.AddressTypeIPv6
	bare := bulkSlice(7)
	bare.Labels = nil
	return map[string]*discoveryv1.EndpointSlice{"bulk": &bulk, "mixed": &mixed, "headless": &headless, "ipv6": &ipv6,
		"no labels": &bare, "empty": {}}
}

// TestSliceUnmarshalAsCompactSlice checks that EndpointSlice.Unmarshal keeps of an EndpointSlice
// message what sliceOf keeps of the discoveryv1.EndpointSlice the generated code decodes
// from it: single messages, messages that repeat fields (two encodings one after the other),
// and every cut of one (refused when the generated code refuses it).
func TestSliceUnmarshalAsCompactSlice(t *testing.T) {
	encoded := marshalAll(t, decodeSliceTestCases())
	checkAllAsGenerated(t, encoded, [][2]string{{"bulk", "mixed"}, {"mixed", "bulk"}, {"bulk", "headless"}, {"no labels", "bulk"},
		{"mixed", "mixed"}}, sliceOf)
	checkCuts(t, encoded["mixed"], sliceOf)
}

// FuzzSliceUnmarshal: on any bytes, Unmarshal does not panic, and where both it and the
// generated code decode them it keeps what sliceOf keeps of the generated code's slice.
func FuzzSliceUnmarshal(f *testing.F) {
	for _, data := range marshalAll(f, decodeSliceTestCases()) {
		f.Add(data)
	}
	f.Add([]byte("0\xff\xff\xff\xff\xff\xff\xff\xff\xff0")) // a varint of 10 bytes whose last is over 1: the generated code drops the bits beyond 64
	f.Fuzz(func(t *testing.T, data []byte) { asGenerated(t, data, sliceOf) })
}
