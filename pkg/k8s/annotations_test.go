package k8s

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func flannelNode(annotations map[string]string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: annotations},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.7"}}},
	}
}

func TestNodeVTEP(t *testing.T) {
	base := map[string]string{
		BackendTypeAnnotation: "vxlan",
		BackendDataAnnotation: `{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:00"}`, // as Flannel writes it
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range base {
			if _, ok := m[k]; !ok {
				m[k] = v
			}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		wantIP  string
		wantErr bool
	}{
		{"InternalIP fallback", base, "192.168.0.7", false},
		{"public-ip", with(PublicIPAnnotation, "203.0.113.1"), "203.0.113.1", false},
		{"overwrite wins", with(PublicIPOverwriteAnnotation, "198.51.100.9"), "198.51.100.9", false},
		{"bad public-ip", with(PublicIPAnnotation, "x"), "", true},
		{"bad json", with(BackendDataAnnotation, "{"), "", true},
		{"VNI 2", with(BackendDataAnnotation, `{"VNI":2,"VtepMAC":"0a:58:0a:f4:01:00"}`), "", true},
		{"type", with(BackendTypeAnnotation, "wireguard"), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NodeVTEP(nodeOf(flannelNode(tc.ann)))
			if (err != nil) != tc.wantErr {
				t.Fatalf("NodeVTEP: %v", err)
			}
			if err == nil && (v.IP.String() != tc.wantIP || v.MAC.String() != "0a:58:0a:f4:01:00") {
				t.Fatalf("NodeVTEP = %+v", v)
			}
		})
	}
	if _, err := NodeVTEP(nodeOf(flannelNode(nil))); !errors.Is(err, ErrNoVTEP) {
		t.Fatalf("no annotations: %v; want ErrNoVTEP", err)
	}
}

func TestNodePodCIDR(t *testing.T) {
	n := flannelNode(map[string]string{PodCIDRAnnotation: "10.244.9.0/24"})
	if p, ok, err := NodePodCIDR(nodeOf(n)); !ok || err != nil || p.String() != "10.244.9.0/24" {
		t.Fatalf("annotation: %v %v %v", p, ok, err)
	}
	n.Spec.PodCIDRs = []string{"fd00::/64", "10.244.3.0/24"}
	if p, ok, err := NodePodCIDR(nodeOf(n)); !ok || err != nil || p.String() != "10.244.3.0/24" {
		t.Fatalf("spec wins, IPv4 picked: %v %v %v", p, ok, err)
	}
}
