package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/agent/netdev"
	"github.com/edgeplane/edgeplane/pkg/internal/netnstest"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/k8stest"
)

// flannelLeftovers builds what a stopped flanneld leaves: flannel.1 (VNI 1, UDP 8472, up, with
// the node's pod CIDR address) and cni0 with its pod CIDR route and no ports.
func flannelLeftovers(t *testing.T, mac net.HardwareAddr) {
	t.Helper()
	setupUnderlay(t)
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1", MTU: 1450, HardwareAddr: mac},
		VxlanId: 1, Port: netdev.VXLANPort, VtepDevIndex: eth.Attrs().Index, SrcAddr: net.ParseIP("192.168.60.2")}
	mustDo(t, netlink.LinkAdd(fl))
	l, err := netlink.LinkByName("flannel.1")
	mustDo(t, err)
	mustDo(t, netlink.LinkSetUp(l))
	addr, _ := netlink.ParseAddr("10.244.3.0/32")
	mustDo(t, netlink.AddrAdd(l, addr))
	mustDo(t, netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}))
	br, err := netlink.LinkByName("cni0")
	mustDo(t, err)
	mustDo(t, netlink.LinkSetUp(br))
	braddr, _ := netlink.ParseAddr("10.244.3.1/24")
	mustDo(t, netlink.AddrAdd(br, braddr))
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func flannelNode(mac string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	if mac != "" {
		n.Annotations = map[string]string{
			k8s.BackendTypeAnnotation: "vxlan",
			k8s.BackendDataAnnotation: `{"VNI":1,"VtepMAC":"` + mac + `"}`,
			k8s.PublicIPAnnotation:    "192.168.60.2",
		}
	}
	return n
}

// TestTakeOverFromFlannel: with a stopped flanneld's flannel.1 up on UDP 8472, edgeplane's device
// cannot come up (the error names flannel.1 and the port); the takeover deletes flannel.1, keeps
// its MAC, deletes the empty cni0 and this node's subnet.env, and the device then comes up with
// Flannel's MAC.
func TestTakeOverFromFlannel(t *testing.T) {
	netnstest.Run(t, func() {
		flMAC, _ := net.ParseMAC("7a:1b:2c:3d:4e:5f")
		flannelLeftovers(t, flMAC)
		want := netdev.VXLAN{Name: "edgeplane.1", MTU: 1450, MAC: netdev.VTEPMAC("node-a"), Address: netip.MustParseAddr("10.244.3.0")}
		_, err := netdev.EnsureVXLAN(want)
		if err == nil || !strings.Contains(err.Error(), "flannel.1") || !strings.Contains(err.Error(), "8472") {
			t.Fatalf("EnsureVXLAN beside flannel.1: %v; want an error naming flannel.1 and UDP 8472", err)
		}
		t.Logf("without the takeover: %v", err)

		dir := t.TempDir()
		subnetFile := filepath.Join(dir, "subnet.env")
		mustDo(t, os.WriteFile(subnetFile, []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644))
		a := &Agent{cfg: Config{NodeName: "node-a", VXLANDevice: "edgeplane.1", FlannelSubnetFile: subnetFile},
			podCIDR: netip.MustParsePrefix("10.244.3.0/24")}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// The annotation names another MAC: the device taken over wins.
		mustDo(t, a.takeOverFromFlannel(ctx, k8stest.Node(flannelNode("7a:00:00:00:00:01"))))
		if a.vtepMAC.String() != flMAC.String() {
			t.Errorf("VTEP MAC %s; want flannel.1's %s", a.vtepMAC, flMAC)
		}
		for _, name := range []string{"flannel.1", "cni0"} {
			if _, err := netlink.LinkByName(name); err == nil {
				t.Errorf("%s still exists after the takeover", name)
			}
		}
		if _, err := os.Stat(subnetFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; want it removed", subnetFile, err)
		}
		want.MAC = a.vtepMAC
		dev, err := netdev.EnsureVXLAN(want)
		mustDo(t, err)
		if dev.MAC.String() != flMAC.String() {
			t.Errorf("edgeplane.1 has MAC %s; want %s", dev.MAC, flMAC)
		}
		// A restart finds edgeplane.1 (its own device, not a holder) and the published MAC.
		mustDo(t, a.takeOverFromFlannel(ctx, k8stest.Node(flannelNode(flMAC.String()))))
		if a.vtepMAC.String() != flMAC.String() {
			t.Errorf("after a restart: VTEP MAC %s; want %s", a.vtepMAC, flMAC)
		}
	})
}

// TestTakeOverLeavesBusyBridgeUntilEmpty: cni0 with a pod still plugged in stays until the pod is
// gone, then goes without a restart.
func TestTakeOverLeavesBusyBridgeUntilEmpty(t *testing.T) {
	netnstest.Run(t, func() {
		flannelLeftovers(t, nil)
		br, err := netlink.LinkByName("cni0")
		mustDo(t, err)
		mustDo(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth-pod", MasterIndex: br.Attrs().Index}, PeerName: "veth-peer"}))
		a := &Agent{cfg: Config{NodeName: "node-a", VXLANDevice: "edgeplane.1"}, podCIDR: netip.MustParsePrefix("10.244.3.0/24")}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		mustDo(t, a.takeOverFromFlannel(ctx, k8stest.Node(flannelNode(""))))
		if _, err := netlink.LinkByName("cni0"); err != nil {
			t.Fatalf("cni0 with a port was deleted: %v", err)
		}
		if a.vtepMAC.String() == "" {
			t.Fatal("no VTEP MAC chosen")
		}
		veth, err := netlink.LinkByName("veth-pod")
		mustDo(t, err)
		mustDo(t, netlink.LinkDel(veth))
		deadline := time.Now().Add(3 * bridgeRecheck)
		for {
			if _, err := netlink.LinkByName("cni0"); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cni0 without ports still there %v later", 3*bridgeRecheck)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestTakeOverRefuses: a VXLAN device on UDP 8472 that is not a stopped Flannel's makes the agent
// refuse with one message naming the device and the port, and deletes nothing.
func TestTakeOverRefuses(t *testing.T) {
	netnstest.Run(t, func() {
		setupUnderlay(t)
		mustDo(t, netlink.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "tunnel7"}, VxlanId: 7, Port: netdev.VXLANPort}))
		l, err := netlink.LinkByName("tunnel7")
		mustDo(t, err)
		mustDo(t, netlink.LinkSetUp(l))
		a := &Agent{cfg: Config{NodeName: "node-a", VXLANDevice: "edgeplane.1"}, podCIDR: netip.MustParsePrefix("10.244.3.0/24")}
		err = a.takeOverFromFlannel(context.Background(), k8stest.Node(flannelNode("")))
		if err == nil || !strings.Contains(err.Error(), "tunnel7") || !strings.Contains(err.Error(), "8472") {
			t.Fatalf("takeover beside tunnel7: %v; want a refusal naming tunnel7 and UDP 8472", err)
		}
		t.Logf("refusal: %v", err)
		if _, err := netlink.LinkByName("tunnel7"); err != nil {
			t.Errorf("tunnel7 was deleted: %v", err)
		}
	})
	flannel := netdev.PortHolder{Name: "flannel.1", VNI: 1, Port: netdev.VXLANPort}
	running := func() ([]int, error) { return []int{4242}, nil }
	if err := refuseUnlessFlannelLeftover(flannel, running); err == nil || !strings.Contains(err.Error(), "4242") {
		t.Errorf("flannel.1 with flanneld running: %v; want a refusal naming flanneld's pid", err)
	}
	none := func() ([]int, error) { return nil, nil }
	if err := refuseUnlessFlannelLeftover(flannel, none); err != nil {
		t.Errorf("flannel.1 without flanneld: %v", err)
	}
	for _, h := range []netdev.PortHolder{
		{Name: "flannel.1", VNI: 2, Port: netdev.VXLANPort},
		{Name: "flannel.1", VNI: 1, Port: netdev.VXLANPort, FlowBased: true},
		{Name: "vxlan0", VNI: 1, Port: netdev.VXLANPort},
	} {
		if err := refuseUnlessFlannelLeftover(h, none); err == nil {
			t.Errorf("%v taken over; want a refusal", h)
		}
	}
}

func TestChooseVTEPMAC(t *testing.T) {
	fl, _ := net.ParseMAC("7a:1b:2c:3d:4e:5f")
	derived := netdev.VTEPMAC("node-a")
	for _, tc := range []struct {
		taken      net.HardwareAddr
		annotation string
		want       string
	}{
		{fl, "7a:00:00:00:00:01", fl.String()},
		{nil, "7a:00:00:00:00:01", "7a:00:00:00:00:01"},
		{nil, "", derived.String()},
		{nil, "01:00:5e:00:00:01", derived.String()}, // multicast: never a VTEP
		{nil, "00:00:00:00:00:00", derived.String()},
		{nil, "garbage", derived.String()},
	} {
		got, source := chooseVTEPMAC(tc.taken, k8stest.Node(flannelNode(tc.annotation)), "node-a")
		if got.String() != tc.want {
			t.Errorf("chooseVTEPMAC(%v, %q) = %s (%s); want %s", tc.taken, tc.annotation, got, source, tc.want)
		}
	}
}
