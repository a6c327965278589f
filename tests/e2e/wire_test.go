package e2e

import (
	"encoding/json"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// TestWireFormatFlannelVXLAN: pod traffic between nodes crosses the underlay as Flannel's VXLAN:
// UDP 8472, VNI 1, inner MACs = the nodes' VTEP MACs as published in the Flannel annotations.
func TestWireFormatFlannelVXLAN(t *testing.T) {
	l := sharedLab(t)
	ctx := t.Context()
	src, dst := shared.pods[0], shared.pods[2] // pod-1a on node1, pod-2a on node2
	vtep := map[string]net.HardwareAddr{}
	for _, n := range []*lab.Node{src.Node, dst.Node} {
		obj, err := l.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var bd struct {
			VNI     int
			VtepMAC string
		}
		raw := obj.Annotations["flannel.alpha.coreos.com/backend-data"]
		if err := json.Unmarshal([]byte(raw), &bd); err != nil {
			t.Fatalf("%s backend-data annotation %q: %v", n.Name, raw, err)
		}
		if bd.VNI != 1 {
			t.Errorf("%s publishes VNI %d, want 1", n.Name, bd.VNI)
		}
		if vtep[n.Name], err = net.ParseMAC(bd.VtepMAC); err != nil {
			t.Fatalf("%s VtepMAC %q: %v", n.Name, bd.VtepMAC, err)
		}
		if got := obj.Annotations["flannel.alpha.coreos.com/backend-type"]; got != "vxlan" {
			t.Errorf("%s backend-type %q, want vxlan", n.Name, got)
		}
		if got := obj.Annotations["flannel.alpha.coreos.com/public-ip"]; got != n.IP.String() {
			t.Errorf("%s public-ip %q, want %s", n.Name, got, n.IP)
		}
	}

	capture, err := lab.StartCapture(l.Switch, dst.Node.SwitchPort)
	if err != nil {
		t.Fatal(err)
	}
	defer capture.Close()
	for i := 0; i < 3; i++ {
		if _, err := lab.Ping(src.Netns, dst.IP, time.Second); err != nil {
			t.Fatalf("%s -> %s: %v", src.Name, dst.Name, err)
		}
	}
	var request, reply bool
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && !(request && reply) {
		frame, err := capture.Next(200 * time.Millisecond)
		if err != nil {
			continue
		}
		f, ok := lab.ParseVXLAN(frame, 8472)
		if !ok || f.InnerProto != unix.IPPROTO_ICMP {
			continue
		}
		from, to := src, dst
		if f.InnerSrc == dst.IP {
			from, to = dst, src
		} else if f.InnerSrc != src.IP {
			continue
		}
		if f.OuterSrc != from.Node.IP || f.OuterDst != to.Node.IP || f.InnerDst != to.IP {
			t.Errorf("%s -> %s: outer %s -> %s, inner %s -> %s", from.Name, to.Name, f.OuterSrc, f.OuterDst, f.InnerSrc, f.InnerDst)
		}
		if f.Flags != 0x08 || f.VNI != 1 {
			t.Errorf("%s -> %s: VXLAN flags %#x VNI %d, want 0x08 and 1", from.Name, to.Name, f.Flags, f.VNI)
		}
		if f.InnerSrcMAC.String() != vtep[from.Node.Name].String() || f.InnerDstMAC.String() != vtep[to.Node.Name].String() {
			t.Errorf("%s -> %s: inner MACs %s -> %s, want the VTEP MACs %s -> %s", from.Name, to.Name,
				f.InnerSrcMAC, f.InnerDstMAC, vtep[from.Node.Name], vtep[to.Node.Name])
		}
		if from == src {
			request = true
		} else {
			reply = true
		}
	}
	if !request || !reply {
		t.Errorf("no VXLAN (UDP 8472) frames seen on %s's switch port: request %v, reply %v", dst.Node.Name, request, reply)
	}
}
