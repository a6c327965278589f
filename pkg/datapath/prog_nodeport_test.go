package datapath

// Services from outside the cluster (bpf/node.c, node_lb): NodePort, LoadBalancer IPs and
// externalIPs arriving on the underlay NIC, to local and remote backends, and their replies on the
// way back out (pod_egress for local backends, node_ingress for remote ones).

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

// lb.h / lb_ct.h flags beyond prog_lb_test.go's and prog_xdp_test.go's.
const (
	lbSvcLocal = 1 << 3
	ctExternal = 1 << 3
)

var (
	outsideClient = netip.MustParseAddr("198.18.0.7") // a client outside the cluster, on the internet
	nodePort      = uint16(30080)
)

// putExtSvc writes a frontend of scope EXTERNAL (vip invalid: a NodePort) with its backend set.
func putExtSvc(t testing.TB, coll *ebpf.Collection, vip netip.Addr, port uint16, proto uint8, id uint32, flags uint16, backends ...backend) {
	t.Helper()
	for i, b := range backends {
		put(t, coll, "lb_backend_map", nodeLbBackendKey{SvcId: id, Slot: uint32(i)}, nodeLbBackend{Ip: be32(b.ip), Port: be16(b.port)})
	}
	var addr uint32
	if vip.IsValid() {
		addr = be32(vip)
	}
	put(t, coll, "lb_svc_map", nodeLbSvcKey{Vip: addr, Port: be16(port), Proto: proto, Scope: lbScopeExternal},
		nodeLbSvc{Id: id, Count: uint16(len(backends)), Flags: flags})
}

// clientSend is the outside client's TCP (flags) or UDP packet to dst:dport as it arrives on the NIC.
func clientSend(proto uint8, dst netip.Addr, dport uint16, flags uint8) []byte {
	return from(outsideClient, dst, proto, l4Seg(proto, outsideClient, dst, 40000, dport, flags, []byte("hello")))
}

// checkEntries verifies the two connection tracking entries of the outside client's connection.
func checkEntries(t testing.TB, coll *ebpf.Collection, front netip.Addr, fport uint16, be backend, proto uint8) {
	t.Helper()
	fwd, ok := ctGet(t, coll, ctKey(outsideClient, 40000, front, fport, proto, ctFwd))
	if !ok || addrOf(fwd.Addr) != be.ip || beToHost16(fwd.Port) != be.port || fwd.Flags&ctExternal == 0 {
		t.Errorf("FWD entry %+v (found %v), want backend %v, EXTERNAL", fwd, ok, be)
	}
	rev, ok := ctGet(t, coll, ctKey(be.ip, be.port, outsideClient, 40000, proto, ctRev))
	if !ok || addrOf(rev.Addr) != front || beToHost16(rev.Port) != fport || rev.Flags&ctExternal == 0 {
		t.Errorf("REV entry %+v (found %v), want frontend %v:%d, EXTERNAL", rev, ok, front, fport)
	}
}

// The local backend's reply through pod_egress: the frontend as source, out of the NIC.
func checkLocalReply(t *testing.T, node *ebpf.Collection, proto uint8, front netip.Addr, fport uint16) {
	t.Helper()
	pod := newCollection(t, loadPod)
	lbCluster(t, pod)
	copyCT(t, node, pod)
	sendAs(t, pod, podB)
	reply := podSend(proto, podB, 8080, outsideClient, 40000, tcpSYN|tcpACK)
	got, out := run(t, pod.Programs["pod_egress"], reply, nil)
	if got != tcActRedirect {
		t.Fatalf("reply: verdict %d, want TC_ACT_REDIRECT (out of the NIC)", got)
	}
	checkTuple(t, out[14:], front, fport, outsideClient, 40000)
	rev, _ := ctGet(t, pod, ctKey(podB, 8080, outsideClient, 40000, proto, ctRev))
	if rev.Flags&ctSeenReply == 0 {
		t.Errorf("REV flags %#x, want SEEN_REPLY", rev.Flags)
	}
	// Pod B's own connection to the outside is no reply: to the host stack, untouched.
	own := podSend(proto, podB, 8081, outsideClient, 40000, tcpSYN)
	if got, out := run(t, pod.Programs["pod_egress"], own, nil); got != tcActOK || !bytes.Equal(out[:len(own)], own) {
		t.Errorf("pod B's own packet to the outside: verdict %d, changed %v", got, !bytes.Equal(out[:len(own)], own))
	}
}

func TestNodePortLocalBackend(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		for _, tt := range []struct {
			name  string
			front netip.Addr // invalid: a NodePort on the node IP
			port  uint16
			flags uint16
		}{
			{"NodePort", netip.Addr{}, nodePort, lbSvcNodePort},
			{"NodePort eTP Local", netip.Addr{}, nodePort, lbSvcNodePort | lbSvcLocal},
			{"LoadBalancer IP", lbIP, 80, lbSvcExternalIP},
			{"externalIP eTP Local", lbIP, 443, lbSvcExternalIP | lbSvcLocal},
		} {
			t.Run(fmt.Sprintf("proto %d %s", proto, tt.name), func(t *testing.T) {
				node := newCollection(t, loadNode)
				lbCluster(t, node)
				putExtSvc(t, node, tt.front, tt.port, proto, 7, tt.flags, backend{podB, 8080})
				front := tt.front
				if !front.IsValid() {
					front = nodeIP
				}
				got, out := run(t, node.Programs["node_ingress"], clientSend(proto, front, tt.port, tcpSYN), nil)
				if got != tcActRedirect {
					t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
				}
				if dst, src := macs(out); dst != podBMAC || src != podBHostMAC {
					t.Errorf("MACs dst %x src %x, want pod B's", dst, src)
				}
				// The client's address is kept (whatever the traffic policy: the backend is local).
				p := checkTuple(t, out[14:], outsideClient, 40000, podB, 8080)
				if !bytes.HasSuffix(p.payload, []byte("hello")) {
					t.Errorf("payload changed")
				}
				checkEntries(t, node, front, tt.port, backend{podB, 8080}, proto)
				if n := metric(t, node, dirNodeIn, ReasonForwarded); n != 1 {
					t.Errorf("node-in forwarded %d, want 1", n)
				}
				checkLocalReply(t, node, proto, front, tt.port)
			})
		}
	}
}

func TestNodePortRemoteBackend(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		t.Run(fmt.Sprint("proto ", proto), func(t *testing.T) {
			node := newCollection(t, loadNode)
			lbCluster(t, node)
			putExtSvc(t, node, netip.Addr{}, nodePort, proto, 7, lbSvcNodePort, backend{remotePod, 8080})
			prog := node.Programs["node_ingress"]
			in := clientSend(proto, nodeIP, nodePort, tcpSYN)
			got, out := run(t, prog, in, nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
			}
			// VXLAN to the backend's node; inside, the overlay address as source (the first port
			// tried is the client's own).
			out = out[:len(in)+50]
			checkVXLAN(t, out, append(bytes.Clone(out[:14]), out[14+50:]...), false)
			checkTuple(t, out[14+50:], overlayAddr, 40000, remotePod, 8080)
			checkEntries(t, node, nodeIP, nodePort, backend{remotePod, 8080}, proto)
			var rv nodeNatRevVal
			rk := nodeNatRevKey{RemoteIp: be32(remotePod), RemotePort: be16(8080), NodePort: be16(40000), Proto: proto}
			if err := node.Maps["nat_rev_map"].Lookup(rk, &rv); err != nil || addrOf(rv.PodIp) != outsideClient || beToHost16(rv.PodPort) != 40000 {
				t.Errorf("gateway mapping %+v (%v), want the client %v:40000", rv, err, outsideClient)
			}

			// The connection's next packet takes the same way with the same port.
			next := clientSend(proto, nodeIP, nodePort, tcpACK)
			if got, out := run(t, prog, next, nil); got != tcActRedirect {
				t.Fatalf("next packet: verdict %d", got)
			} else {
				checkTuple(t, out[14+50:], overlayAddr, 40000, remotePod, 8080)
			}

			// The backend's reply comes back through the tunnel to the overlay address: both
			// translations undone, out of the NIC with the node port as source.
			l4 := l4Seg(proto, remotePod, overlayAddr, 8080, 40000, tcpSYN|tcpACK, []byte("world"))
			replyInner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: remotePod, dst: overlayAddr, proto: proto}.build(l4))
			t.Run("reply through VXLAN", func(t *testing.T) {
				got, out := run(t, prog, vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), replyInner), nil)
				if got != tcActRedirect {
					t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
				}
				checkTuple(t, out[14:], nodeIP, nodePort, outsideClient, 40000)
			})
			t.Run("reply by direct routing", func(t *testing.T) {
				got, out := run(t, prog, ethFrame(underlayMAC, remoteNextHop, ethPIPv4, replyInner[14:]), nil)
				if got != tcActRedirect {
					t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
				}
				checkTuple(t, out[14:], nodeIP, nodePort, outsideClient, 40000)
			})
			// Other traffic to the overlay address keeps its way to the host (the kernel device).
			t.Run("other traffic to the overlay address", func(t *testing.T) {
				l4 := l4Seg(proto, remotePod, overlayAddr, 8080, 40001, tcpACK, nil)
				inner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, ipHdr{src: remotePod, dst: overlayAddr, proto: proto}.build(l4))
				in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner)
				if got, out := run(t, prog, in, nil); got != tcActOK || !bytes.Equal(out[:len(in)], in) {
					t.Errorf("verdict %d (want TC_ACT_OK), changed %v", got, !bytes.Equal(out[:len(in)], in))
				}
			})
		})
	}
}

func TestNodePortRemoteBackendDeviceMode(t *testing.T) {
	node := newCollection(t, loadNode)
	lbCluster(t, node, withEncap(1))
	putExtSvc(t, node, netip.Addr{}, nodePort, protoTCP, 7, lbSvcNodePort, backend{remotePod, 8080})
	got, out := run(t, node.Programs["node_ingress"], clientSend(protoTCP, nodeIP, nodePort, tcpSYN), nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want TC_ACT_REDIRECT (to the VXLAN device)", got)
	}
	if dst, src := macs(out); dst != remoteVtepMAC || src != vtepMAC {
		t.Errorf("inner MACs dst %x src %x, want the VTEPs'", dst, src)
	}
	checkTuple(t, out[14:], overlayAddr, 40000, remotePod, 8080)
}

func TestNodePortVerdicts(t *testing.T) {
	node := newCollection(t, loadNode)
	lbCluster(t, node, withMasquerade())
	putExtSvc(t, node, netip.Addr{}, nodePort, protoTCP, 1, lbSvcNodePort, backend{podB, 8080})
	putExtSvc(t, node, netip.Addr{}, closedTCP, protoTCP, 2, lbSvcNodePort|lbSvcClosed)
	putExtSvc(t, node, netip.Addr{}, 30090, protoTCP, 3, lbSvcNodePort)
	putExtSvc(t, node, netip.Addr{}, 30091, protoUDP, 4, lbSvcNodePort|lbSvcLocal, backend{remotePod, 8080})
	putExtSvc(t, node, lbIP, 80, protoTCP, 5, lbSvcExternalIP|lbSvcClosed)
	prog := node.Programs["node_ingress"]
	for _, tt := range []struct {
		name   string
		pkt    []byte
		want   uint32
		reason DropReason // counted under dirNodeIn
	}{
		{"closed NodePort (XDP could not attach)", clientSend(protoTCP, nodeIP, closedTCP, tcpSYN), tcActShot, DropNodePortClosed},
		{"closed LoadBalancer IP", clientSend(protoTCP, lbIP, 80, tcpSYN), tcActShot, DropNodePortClosed},
		{"NodePort without backends", clientSend(protoTCP, nodeIP, 30090, tcpSYN), tcActShot, DropNoServiceBackend},
		{"eTP Local with a remote backend", clientSend(protoUDP, nodeIP, 30091, 0), tcActShot, DropNoServiceBackend},
		// Not a service's: the node's own traffic passes untouched.
		{"SSH to the node", clientSend(protoTCP, nodeIP, 22, tcpSYN), tcActOK, ReasonForwarded},
		{"API traffic to the node", clientSend(protoTCP, nodeIP, 6443, tcpACK), tcActOK, ReasonForwarded},
		{"DNS to the node", clientSend(protoUDP, nodeIP, 53, 0), tcActOK, ReasonForwarded},
		{"the NodePort's port on the LB IP", clientSend(protoTCP, lbIP, nodePort, tcpSYN), tcActOK, ReasonForwarded},
		{"the NodePort's protocol differs", clientSend(protoUDP, nodeIP, nodePort, 0), tcActOK, ReasonForwarded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := metric(t, node, dirNodeIn, tt.reason)
			got, out := run(t, prog, tt.pkt, nil)
			if got != tt.want {
				t.Fatalf("verdict %d, want %d", got, tt.want)
			}
			if n := metric(t, node, dirNodeIn, tt.reason) - before; n != 1 {
				t.Errorf("%v counted %d times, want 1", tt.reason, n)
			}
			if tt.want == tcActOK && !bytes.Equal(out[:len(tt.pkt)], tt.pkt) {
				t.Errorf("packet changed")
			}
		})
	}
	// A reply to a masqueraded connection on the node IP is the masquerade's, not the NodePort's.
	masq := node.Programs["node_egress"]
	run(t, masq, fromPod(podA, outsideClient, protoTCP, tcpSeg(podA, outsideClient, nodePort, 443, tcpSYN, nil)), nil)
	in := from(outsideClient, nodeIP, protoTCP, tcpSeg(outsideClient, nodeIP, 443, nodePort, tcpSYN|tcpACK, nil))
	if got, out := run(t, prog, in, nil); got != tcActOK {
		t.Errorf("masquerade reply: verdict %d, want TC_ACT_OK (the host stack, to pod A)", got)
	} else {
		checkTuple(t, out[14:], outsideClient, 443, podA, nodePort)
	}
}

// An ICMP error from a local backend about the client's packet (UDP port unreachable) leaves like
// the replies: from the frontend, quoting the client's packet to the frontend.
func TestNodePortICMPErrorFromBackend(t *testing.T) {
	node := newCollection(t, loadNode)
	lbCluster(t, node)
	putExtSvc(t, node, netip.Addr{}, nodePort, protoUDP, 7, lbSvcNodePort, backend{podB, 5353})
	if got, _ := run(t, node.Programs["node_ingress"], clientSend(protoUDP, nodeIP, nodePort, 0), nil); got != tcActRedirect {
		t.Fatalf("verdict %d", got)
	}
	pod := newCollection(t, loadPod)
	lbCluster(t, pod)
	copyCT(t, node, pod)
	sendAs(t, pod, podB)
	in := ethFrame(podBHostMAC, podBMAC, ethPIPv4, portUnreach(podB, 5353, outsideClient, 40000))
	got, out := run(t, pod.Programs["pod_egress"], in, nil)
	if got != tcActRedirect {
		t.Fatalf("verdict %d, want TC_ACT_REDIRECT (out of the NIC)", got)
	}
	p := parseIP(t, out[14:])
	checkL4Csum(t, p)
	if p.src != nodeIP || p.dst != outsideClient {
		t.Errorf("error %v -> %v, want %v -> %v", p.src, p.dst, nodeIP, outsideClient)
	}
	q := parseIP(t, p.payload[8:])
	if sport, dport := ports(q); q.src != outsideClient || sport != 40000 || q.dst != nodeIP || dport != nodePort {
		t.Errorf("quote %v:%d -> %v:%d, want the client's packet to %v:%d", q.src, sport, q.dst, dport, nodeIP, nodePort)
	}
}
