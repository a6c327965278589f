package cni

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

func TestAddCheckDel(t *testing.T) {
	for _, ver := range specVersions {
		t.Run(ver, func(t *testing.T) {
			e := newEnv(t)
			pod := newNS(t)
			cid := "container-" + ver
			conf := e.conf(ver, nil)
			res, err := e.add(pod, cid, conf)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if len(res.IPs) != 1 || len(res.Interfaces) != 2 || res.IPs[0].Interface == nil || *res.IPs[0].Interface != 1 {
				t.Fatalf("result %+v", res)
			}
			podIP, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
			if !e.podCIDR.Contains(podIP) {
				t.Fatalf("pod IP %s not in %s", podIP, e.podCIDR)
			}
			hostVeth := HostVethName(cid, "eth0")
			if res.Interfaces[0].Name != hostVeth || res.Interfaces[1].Sandbox != pod.Path() {
				t.Fatalf("interfaces %+v %+v", res.Interfaces[0], res.Interfaces[1])
			}
			eps, err := endpoints.Open(e.root)
			if err != nil {
				t.Fatal(err)
			}
			defer eps.Close()
			ep, err := eps.Lookup(podIP)
			if err != nil {
				t.Fatalf("endpoint entry: %v", err)
			}
			if maps.MAC(ep.HostMAC) != res.Interfaces[0].Mac || maps.MAC(ep.PodMAC) != res.Interfaces[1].Mac {
				t.Fatalf("endpoint %v vs result %+v", ep, res.Interfaces)
			}
			wantName := nameindex.Pod{IP: podIP, Namespace: "ns-" + cid, Name: "pod-" + cid, UID: "uid-" + cid,
				ContainerID: cid, Interface: "eth0", HostInterface: hostVeth}
			if got := e.podNames(); len(got) != 1 || got[podIP] != wantName {
				t.Fatalf("name index %v, want %v", got, wantName)
			}
			_ = pod.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName("eth0")
				if err != nil {
					t.Fatal(err)
				}
				if l.Attrs().MTU != 1450 {
					t.Errorf("pod MTU %d, want 1450", l.Attrs().MTU)
				}
				return nil
			})

			withPrev := withPrevResult(t, conf, ver, res)
			if err := e.check(pod, cid, withPrev); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			// CHECK notices a missing endpoint entry.
			if err := eps.Delete(podIP); err != nil {
				t.Fatal(err)
			}
			if err := e.check(pod, cid, withPrev); err == nil {
				t.Fatal("CHECK passed without the endpoint entry")
			}

			if err := e.del(pod, cid, withPrev); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if err := e.del(pod, cid, withPrev); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
			e.assertClean()
		})
	}
}

// TestAddBigTCP: with node.json's gsoIPv4MaxSize (the agent's --ipv4-big-tcp in a route-mode
// domain) both ends of the pod's veth pair get that IPv4 GSO and GRO size; without it they keep
// the kernel's.
func TestAddBigTCP(t *testing.T) {
	e := newEnv(t)
	e.gsoIPv4MaxSize = 196608
	e.writeNode()
	pod := newNS(t)
	res, err := e.add(pod, "container-big", e.conf("1.1.0", nil))
	if err != nil && strings.Contains(err.Error(), "no IPv4 BIG TCP") {
		t.Skipf("%v: the agent never asks for it on this kernel (its NIC refuses it first)", err)
	}
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	sizes := func(l netlink.Link) [2]uint32 { return [2]uint32{l.Attrs().GSOIPv4MaxSize, l.Attrs().GROIPv4MaxSize} }
	want := [2]uint32{196608, 196608}
	_ = pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if got := sizes(l); got != want {
			t.Errorf("pod eth0: gso/gro_ipv4_max_size %v, want %v", got, want)
		}
		return nil
	})
	_ = e.inNode(func() error {
		l, err := netlink.LinkByName(res.Interfaces[0].Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := sizes(l); got != want {
			t.Errorf("host veth: gso/gro_ipv4_max_size %v, want %v", got, want)
		}
		return nil
	})

	e.gsoIPv4MaxSize = 0
	e.writeNode()
	other := newNS(t)
	if _, err := e.add(other, "container-small", e.conf("1.1.0", nil)); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	_ = other.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if got := sizes(l); got != [2]uint32{65536, 65536} {
			t.Errorf("pod eth0 without BIG TCP: gso/gro_ipv4_max_size %v, want the kernel's 65536", got)
		}
		return nil
	})
}

func TestAddIsIdempotent(t *testing.T) {
	e := newEnv(t)
	pod := newNS(t)
	conf := e.conf("1.1.0", nil)
	first, err := e.add(pod, "c1", conf)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.add(pod, "c1", conf)
	if err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if n := e.endpointCount(); n != 1 {
		t.Errorf("%d endpoint entries after two ADDs, want 1", n)
	}
	if pods := e.podNames(); len(pods) != 1 || pods[netip.MustParseAddr(second.IPs[0].Address.IP.String())].ContainerID != "c1" {
		t.Errorf("name index after two ADDs: %v, want the second address only", pods)
	}
	t.Logf("first %s, second %s", first.IPs[0].Address.IP, second.IPs[0].Address.IP)
	if err := e.check(pod, "c1", withPrevResult(t, conf, "1.1.0", second)); err != nil {
		t.Fatalf("CHECK after re-ADD: %v", err)
	}
	if err := e.del(pod, "c1", conf); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestDelWithNetnsGone(t *testing.T) {
	e := newEnv(t)
	pod := newNS(t)
	conf := e.conf("1.0.0", nil)
	res, err := e.add(pod, "c1", conf)
	if err != nil {
		t.Fatal(err)
	}
	removeNS(t, pod)
	if _, err := os.Stat(pod.Path()); err == nil {
		t.Fatalf("netns %s still there", pod.Path())
	}
	// The veth goes with the netns; DEL still cleans the rest. (The runtime passes the old path.)
	if err := e.del(nil, "c1", withPrevResult(t, conf, "1.0.0", res)); err != nil {
		t.Fatalf("DEL without netns: %v", err)
	}
	e.assertClean()
}

func TestAddRollsBack(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(e *env) (restore func())
		conf   map[string]any
	}{
		{
			name: "pod program not pinned",
			break_: func(e *env) func() {
				pin := filepath.Join(e.root, datapath.PodProgram)
				if err := os.Remove(pin); err != nil {
					e.t.Fatal(err)
				}
				return func() {
					if err := e.dp.Program("pod_egress").Pin(pin); err != nil {
						e.t.Fatal(err)
					}
				}
			},
		},
		{
			name: "endpoints map full",
			break_: func(e *env) func() {
				m := e.dp.Map(endpoints.MapName)
				val := make([]byte, m.ValueSize())
				for i := uint32(0); i < m.MaxEntries(); i++ {
					key := [4]byte{172, 16, byte(i >> 8), byte(i)}
					if err := m.Put(key, val); err != nil {
						e.t.Fatalf("filling endpoints_map at %d: %v", i, err)
					}
				}
				return func() {
					for i := uint32(0); i < m.MaxEntries(); i++ {
						_ = m.Delete([4]byte{172, 16, byte(i >> 8), byte(i)})
					}
				}
			},
		},
		{
			name: "ipam plugin missing",
			conf: map[string]any{"ipam": map[string]any{"type": "no-such-ipam"}},
		},
		{
			name: "ipam range outside anything",
			conf: map[string]any{"ipam": map[string]any{"type": "host-local", "subnet": "not-a-subnet"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pod := newNS(t)
			if tc.break_ != nil {
				restore := tc.break_(e)
				defer restore()
			}
			conf := e.conf("1.1.0", nil)
			if tc.conf != nil {
				ipamConf := tc.conf["ipam"].(map[string]any)
				ipamConf["dataDir"] = e.dataDir
				conf = e.conf("1.1.0", tc.conf)
			}
			if _, err := e.add(pod, "c1", conf); err == nil {
				t.Fatal("ADD succeeded")
			} else {
				t.Logf("ADD failed as expected: %v", err)
			}
			if tc.break_ != nil && tc.name == "endpoints map full" {
				if n := e.endpointCount(); n != int(e.dp.Map(endpoints.MapName).MaxEntries()) {
					t.Errorf("endpoint count changed to %d", n)
				}
			}
			_ = pod.Do(func(ns.NetNS) error {
				if _, err := netlink.LinkByName("eth0"); err == nil {
					t.Error("pod eth0 left after a failed ADD")
				}
				return nil
			})
			entries, _ := os.ReadDir(filepath.Join(e.dataDir, "edgeplane-test"))
			for _, ent := range entries {
				if _, err := netip.ParseAddr(ent.Name()); err == nil {
					t.Errorf("address %s still reserved", ent.Name())
				}
			}
			if names, _ := datapath.PodLinks(e.root); len(names) != 0 {
				t.Errorf("pod links left: %v", names)
			}
			if pods := e.podNames(); len(pods) != 0 {
				t.Errorf("name index entries left after a failed ADD: %v", pods)
			}
		})
	}
}

// TestNameIndexIsAdvisory: a run dir where the index cannot be written (names is a file) fails
// neither ADD nor DEL; a stale entry of another attachment under the pod's address is replaced on
// ADD, and a late DEL of that attachment removes its other entries but not the new pod's.
func TestNameIndexIsAdvisory(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	blocker := filepath.Join(e.runDir, nameindex.Dir)
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := newNS(t)
	if _, err := e.add(pod, "c1", conf); err != nil {
		t.Fatalf("ADD with an unwritable index: %v", err)
	}
	if err := e.del(pod, "c1", conf); err != nil {
		t.Fatalf("DEL with an unwritable index: %v", err)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}

	// Stale entries of a gone attachment under every address host-local may hand out next.
	for ip, i := e.podCIDR.Addr(), 0; i < 16; ip, i = ip.Next(), i+1 {
		if err := nameindex.WritePod(e.runDir, nameindex.Pod{IP: ip, Name: "gone", ContainerID: "old", Interface: "eth0"}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.add(pod, "c2", conf)
	if err != nil {
		t.Fatal(err)
	}
	podIP, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if got := e.podNames(); got[podIP].Name != "pod-c2" || got[podIP.Next()].Name != "gone" {
		t.Fatalf("name index %v, want %s named pod-c2 and the rest stale", got, podIP)
	}
	if err := e.del(nil, "old", e.conf("1.1.0", nil)); err != nil { // a late DEL of the stale attachment
		t.Fatal(err)
	}
	if got := e.podNames(); got[podIP].Name != "pod-c2" {
		t.Errorf("name index %v, want %s named pod-c2", got, podIP)
	}
	if err := e.del(pod, "c2", conf); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	status := func() error {
		return e.inNode(func() error { return testutils.CmdStatus(func() error { return cmdStatus(args(nil, "", conf)) }) })
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS with node.json and pins: %v", err)
	}
	if err := cninode.Remove(e.runDir); err != nil {
		t.Fatal(err)
	}
	var terr *types.Error
	if err := status(); !errors.As(err, &terr) || terr.Code != 50 {
		t.Fatalf("STATUS without node.json: %v", err)
	}
	if err := os.WriteFile(cninode.Path(e.runDir), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := status(); !errors.As(err, &terr) || terr.Code != 50 {
		t.Fatalf("STATUS with a broken node.json: %v", err)
	}
	e.writeNode()
	if err := datapath.Cleanup(e.root); err != nil {
		t.Fatal(err)
	}
	if err := status(); !errors.As(err, &terr) || terr.Code != 50 || !strings.Contains(terr.Msg, "pinned") {
		t.Fatalf("STATUS without pins: %v", err)
	}
}

func TestGC(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil)
	pods := map[string]ns.NetNS{}
	for _, cid := range []string{"keep", "stale-1", "stale-2"} {
		pods[cid] = newNS(t)
		if _, err := e.add(pods[cid], cid, conf); err != nil {
			t.Fatal(err)
		}
	}
	gcConf := e.conf("1.1.0", map[string]any{
		"cni.dev/valid-attachments": []map[string]string{{"containerID": "keep", "ifname": "eth0"}},
	})
	if err := e.inNode(func() error { return cmdGC(args(nil, "", gcConf)) }); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if n := e.endpointCount(); n != 1 {
		t.Errorf("%d endpoint entries after GC, want 1", n)
	}
	names, _ := datapath.PodLinks(e.root)
	if len(names) != 1 || names[0] != HostVethName("keep", "eth0") {
		t.Errorf("pod links after GC: %v", names)
	}
	entries, _ := os.ReadDir(filepath.Join(e.dataDir, "edgeplane-test"))
	reserved := 0
	for _, ent := range entries {
		if _, err := netip.ParseAddr(ent.Name()); err == nil {
			reserved++
		}
	}
	if reserved != 1 {
		t.Errorf("%d addresses reserved after GC, want 1", reserved)
	}
	if pods := e.podNames(); len(pods) != 1 {
		t.Errorf("name index after GC: %v, want the kept pod only", pods)
	}
	if err := e.del(pods["keep"], "keep", conf); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
}

func TestBadConfig(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name  string
		stdin string
		code  uint
	}{
		{"not json", `{"cniVersion":`, types.ErrDecodingFailure},
		{"no version", `{"name":"n","type":"edgeplane"}`, types.ErrInvalidNetworkConfig},
		{"bad version", `{"cniVersion":"x.y","name":"n","type":"edgeplane"}`, types.ErrInvalidNetworkConfig},
		{"no name", `{"cniVersion":"1.1.0","type":"edgeplane"}`, types.ErrInvalidNetworkConfig},
		{"wrong type", `{"cniVersion":"1.1.0","name":"n","type":"bridge"}`, types.ErrInvalidNetworkConfig},
		{"ipam not an object", `{"cniVersion":"1.1.0","name":"n","type":"edgeplane","ipam":"host-local"}`, types.ErrInvalidNetworkConfig},
		{"ipam type empty", `{"cniVersion":"1.1.0","name":"n","type":"edgeplane","ipam":{"type":""}}`, types.ErrInvalidNetworkConfig},
		{"mtu out of range", `{"cniVersion":"1.1.0","name":"n","type":"edgeplane","mtu":100}`, types.ErrInvalidNetworkConfig},
		{"no node.json", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","type":"edgeplane","runDir":%q}`, t.TempDir()), types.ErrTryAgainLater},
		{"chained after another plugin", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","type":"edgeplane","runDir":%q,"prevResult":{"cniVersion":"1.1.0"}}`, e.runDir), types.ErrInvalidNetworkConfig},
	}
	pod := newNS(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.add(pod, "c1", []byte(tc.stdin))
			var terr *types.Error
			if !errors.As(err, &terr) || terr.Code != tc.code {
				t.Fatalf("got %v, want code %d", err, tc.code)
			}
			t.Logf("code %d: %s (%s)", terr.Code, terr.Msg, terr.Details)
		})
	}
	e.assertClean()
}

func TestManyCyclesLeaveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	e := newEnv(t)
	pod := newNS(t)
	conf := e.conf("1.1.0", nil)
	for i := range 200 {
		cid := fmt.Sprintf("cycle-%d", i)
		res, err := e.add(pod, cid, conf)
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		if err := e.del(pod, cid, withPrevResult(t, conf, "1.1.0", res)); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	e.assertClean()
	// The maps the agent pinned are still the ones the datapath uses.
	if _, err := ebpf.LoadPinnedMap(maps.PinPath(e.root, endpoints.MapName), nil); err != nil {
		t.Fatal(err)
	}
}
