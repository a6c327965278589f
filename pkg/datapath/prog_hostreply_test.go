package datapath

// The node's own connections to frontends against stale mappings of the gateway (bpf/lib/nat.h).
// node_lb_snat gives an outside client's NodePort connection to a remote backend the overlay
// address with the client's own port where it can; that mapping outlives the connection (the
// table only evicts), and the host connects to frontends from the overlay address with ports the
// kernel picks from the same range. A reply whose tuple a live connection of the host names is the
// host's (lb_host_reply, node_lb_is_reply), and a new NodePort connection does not take a port
// such a connection holds toward its backend (nat_port_used_by_host).

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

// staleClient is the outside client whose earlier connection left the gateway's mapping behind;
// hostPort is both its port and the one the host picks later.
var (
	cloudHost = netip.MustParseAddr("172.16.0.9") // a cloud host routed through this node (the gateway)
	hostPort  = uint16(40000)
)

// hostConnect makes the node's own connection from the overlay address, port sport, to
// svcVIP:80 with backend be, as overlay_egress translates it, and copies its connection tracking
// entries into each of colls (they share the pinned map on a node). Returns the host's REV key.
func hostConnect(t *testing.T, proto uint8, sport uint16, be backend, colls ...*ebpf.Collection) podLbCtKey {
	t.Helper()
	overlay := newCollection(t, loadOverlay)
	lbCluster(t, overlay)
	putSvc(t, overlay, svcVIP, 80, proto, 1, 0, 0, be)
	run(t, overlay.Programs["overlay_egress"], hostTo(overlayAddr, sport, svcVIP, 80, proto), nil)
	rk := ctKey(be.ip, be.port, overlayAddr, sport, proto, ctRev)
	if _, ok := ctGet(t, overlay, rk); !ok {
		t.Fatalf("overlay_egress wrote no REV entry for the host's connection")
	}
	for _, c := range colls {
		copyCT(t, overlay, c)
	}
	return rk
}

// nodePortThrough sends the outside client's first packet to the NodePort of a remote backend
// (remotePod:8080) through node_ingress and returns the overlay port the gateway gave it.
func nodePortThrough(t *testing.T, node *ebpf.Collection, proto uint8) uint16 {
	t.Helper()
	in := clientSend(proto, nodeIP, nodePort, tcpSYN)
	got, out := run(t, node.Programs["node_ingress"], in, nil)
	if got != tcActRedirect {
		t.Fatalf("NodePort packet: verdict %d, want TC_ACT_REDIRECT (VXLAN)", got)
	}
	p := parseIP(t, out[14+50:len(in)+50])
	checkL4Csum(t, p)
	sport, dport := ports(p)
	if p.src != overlayAddr || p.dst != remotePod || dport != 8080 {
		t.Fatalf("NodePort packet %v -> %v:%d, want %v -> %v:8080", p.src, p.dst, dport, overlayAddr, remotePod)
	}
	return sport
}

// backendReply is the remote backend's reply to overlay:hostPort as it leaves its pod.
func backendReply(proto uint8) []byte {
	l4 := l4Seg(proto, remotePod, overlayAddr, 8080, hostPort, tcpSYN|tcpACK, []byte("world"))
	return ipHdr{src: remotePod, dst: overlayAddr, proto: proto}.build(l4)
}

// A remote backend's reply to the host's live connection, whose tuple a stale NodePort mapping
// names too, arriving on the NIC (VXLAN and direct routing): the host's, whatever state the old
// client's entries are in. Without a live host connection the mapping applies as before.
func TestHostReplyOverStaleNodePortMapping(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		for _, tt := range []struct {
			name   string
			client string        // the old client's entries: "alive", "dead" (not yet collected), "gone"
			host   time.Duration // the host connection's age; <0: no host connection
			want   string        // "host", "client", "dropped", "untouched"
		}{
			{"host connection, old client's entries dead", "dead", 0, "host"},
			{"host connection, old client's entries collected", "gone", 0, "host"},
			// Both cannot work on one tuple at the backend; the backend's answer to the host's new
			// connection is taken as the host's (lb_rev_overlay decides the same way).
			{"host connection, old client still alive", "alive", 0, "host"},
			{"no host connection, client alive", "alive", -1, "client"},
			{"host connection expired, client alive", "alive", 2 * time.Minute, "client"},
			{"no host connection, client dead", "dead", -1, "dropped"},
			{"no host connection, client's entries collected", "gone", -1, "untouched"},
		} {
			t.Run(fmt.Sprintf("proto %d %s", proto, tt.name), func(t *testing.T) {
				node := newCollection(t, loadNode)
				lbCluster(t, node)
				putExtSvc(t, node, netip.Addr{}, nodePort, proto, 7, lbSvcNodePort, backend{remotePod, 8080})
				if p := nodePortThrough(t, node, proto); p != hostPort {
					t.Fatalf("gateway port %d, want the client's %d", p, hostPort)
				}
				cfwd := ctKey(outsideClient, hostPort, nodeIP, nodePort, proto, ctFwd)
				crev := ctKey(remotePod, 8080, outsideClient, hostPort, proto, ctRev)
				switch tt.client {
				case "dead":
					ageCT(t, node, cfwd, 2*time.Minute)
					ageCT(t, node, crev, 2*time.Minute)
				case "gone":
					node.Maps["lb_ct_map"].Delete(cfwd)
					node.Maps["lb_ct_map"].Delete(crev)
				}
				if tt.host >= 0 {
					hrev := hostConnect(t, proto, hostPort, backend{remotePod, 8080}, node)
					if tt.host > 0 {
						ageCT(t, node, hrev, tt.host)
					}
				}
				inner := ethFrame(vtepMAC, remoteVtepMAC, ethPIPv4, backendReply(proto))
				prog := node.Programs["node_ingress"]

				t.Run("VXLAN", func(t *testing.T) {
					in := vxlanFrame(remoteNodeIP, vxlanPort, vxlanHdr(0x08000000, vni), inner)
					before := metric(t, node, dirOverlayIn, dropreason.NATFailed)
					got, out := run(t, prog, in, nil)
					switch tt.want {
					case "host", "untouched":
						// To the kernel device untouched: overlay_ingress undoes the service's
						// translation there with lb_rev_overlay (TestHostReplyLocalBackend).
						passedUntouched(t, got, in, out)
					case "client":
						if got != tcActRedirect {
							t.Fatalf("verdict %d, want TC_ACT_REDIRECT (out of the NIC)", got)
						}
						checkTuple(t, out[14:], nodeIP, nodePort, outsideClient, hostPort)
					case "dropped":
						if got != tcActShot || metric(t, node, dirOverlayIn, dropreason.NATFailed) != before+1 {
							t.Errorf("verdict %d, want TC_ACT_SHOT counted as NAT_FAILED", got)
						}
					}
				})
				t.Run("direct routing", func(t *testing.T) {
					in := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, inner[14:])
					got, out := run(t, prog, in, nil)
					switch tt.want {
					case "host":
						if got != tcActOK {
							t.Fatalf("verdict %d, want TC_ACT_OK (the host stack)", got)
						}
						checkTuple(t, out[14:], svcVIP, 80, overlayAddr, hostPort)
					case "untouched":
						passedUntouched(t, got, in, out)
					case "client":
						if got != tcActRedirect {
							t.Fatalf("verdict %d, want TC_ACT_REDIRECT (out of the NIC)", got)
						}
						checkTuple(t, out[14:], nodeIP, nodePort, outsideClient, hostPort)
					case "dropped":
						if got != tcActShot {
							t.Errorf("verdict %d, want TC_ACT_SHOT", got)
						}
					}
				})
			})
		}
	}
}

// An ICMP error from the backend about the host's packet (UDP port unreachable) follows the same
// rule: the host's, not the old client's.
func TestHostReplyICMPErrorOverStaleNodePortMapping(t *testing.T) {
	node := newCollection(t, loadNode)
	lbCluster(t, node)
	putExtSvc(t, node, netip.Addr{}, nodePort, protoUDP, 7, lbSvcNodePort, backend{remotePod, 8080})
	nodePortThrough(t, node, protoUDP)
	hostConnect(t, protoUDP, hostPort, backend{remotePod, 8080}, node)
	in := ethFrame(underlayMAC, remoteNextHop, ethPIPv4, portUnreach(remotePod, 8080, overlayAddr, hostPort))
	got, out := run(t, node.Programs["node_ingress"], in, nil)
	if got != tcActOK {
		t.Fatalf("verdict %d, want TC_ACT_OK (the host stack)", got)
	}
	p := parseIP(t, out[14:])
	checkL4Csum(t, p)
	q := parseIP(t, p.payload[8:])
	if sport, dport := ports(q); p.dst != overlayAddr || q.src != overlayAddr || sport != hostPort || q.dst != svcVIP || dport != 80 {
		t.Errorf("error to %v quoting %v:%d -> %v:%d, want to %v quoting the host's packet to %v:80",
			p.dst, q.src, sport, q.dst, dport, overlayAddr, svcVIP)
	}
}

// lb_rev_overlay (pod_egress for local backends; overlay_ingress, which test_run cannot reach
// without tunnel metadata, runs the same function): a stale mapping of the gateway toward pod B
// (a cloud host's earlier connection through nat_snat_overlay) does not take the reply to the
// host's live connection; without one, or once it expired, the mapping applies as before.
func TestHostReplyLocalBackend(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		for _, tt := range []struct {
			name string
			host time.Duration // the host connection's age; <0: none
			want netip.Addr    // the reply's destination
		}{
			{"host connection", 0, overlayAddr},
			{"host connection expired", 2 * time.Minute, cloudHost},
			{"no host connection", -1, cloudHost},
		} {
			t.Run(fmt.Sprintf("proto %d %s", proto, tt.name), func(t *testing.T) {
				pod := newCollection(t, loadPod)
				lbCluster(t, pod)
				put(t, pod, "nat_rev_map",
					podNatRevKey{RemoteIp: be32(podB), RemotePort: be16(8080), NodePort: be16(hostPort), Proto: proto},
					podNatRevVal{PodIp: be32(cloudHost), PodPort: be16(hostPort)})
				if tt.host >= 0 {
					hrev := hostConnect(t, proto, hostPort, backend{podB, 8080}, pod)
					if tt.host > 0 {
						ageCT(t, pod, hrev, tt.host)
					}
				}
				sendAs(t, pod, podB)
				got, out := run(t, pod.Programs["pod_egress"], podSend(proto, podB, 8080, overlayAddr, hostPort, tcpSYN|tcpACK), nil)
				if got != tcActOK {
					t.Fatalf("verdict %d, want TC_ACT_OK (the host stack)", got)
				}
				if tt.want == overlayAddr {
					checkTuple(t, out[14:], svcVIP, 80, overlayAddr, hostPort)
				} else {
					checkTuple(t, out[14:], podB, 8080, cloudHost, hostPort)
				}
			})
		}
	}
}

// A new NodePort connection through the gateway does not take the port a live connection of the
// host holds toward the same backend (its socket names the frontend, so the socket lookup cannot
// see it); once that connection expired, the client's own port is free again.
func TestNodePortSkipsHostPort(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		for _, tt := range []struct {
			name     string
			host     time.Duration // the host connection's age
			wantSame bool          // the client's own port
		}{
			{"host connection alive", 0, false},
			{"host connection expired", 2 * time.Minute, true},
		} {
			t.Run(fmt.Sprintf("proto %d %s", proto, tt.name), func(t *testing.T) {
				node := newCollection(t, loadNode)
				lbCluster(t, node)
				putExtSvc(t, node, netip.Addr{}, nodePort, proto, 7, lbSvcNodePort, backend{remotePod, 8080})
				hrev := hostConnect(t, proto, hostPort, backend{remotePod, 8080}, node)
				if tt.host > 0 {
					ageCT(t, node, hrev, tt.host)
				}
				port := nodePortThrough(t, node, proto)
				if (port == hostPort) != tt.wantSame {
					t.Fatalf("gateway port %d, client's and host's %d: want same %v", port, hostPort, tt.wantSame)
				}
				var rv nodeNatRevVal
				rk := nodeNatRevKey{RemoteIp: be32(remotePod), RemotePort: be16(8080), NodePort: be16(port), Proto: proto}
				if err := node.Maps["nat_rev_map"].Lookup(rk, &rv); err != nil || addrOf(rv.PodIp) != outsideClient || beToHost16(rv.PodPort) != hostPort {
					t.Errorf("gateway mapping for port %d: %+v (%v), want the client %v:%d", port, rv, err, outsideClient, hostPort)
				}
			})
		}
	}
}

// passedUntouched: the program let the frame pass (TC_ACT_OK) as it came.
func passedUntouched(t *testing.T, verdict uint32, in, out []byte) {
	t.Helper()
	if changed := !bytes.Equal(out[:len(in)], in); verdict != tcActOK || changed {
		t.Errorf("verdict %d (want TC_ACT_OK), changed %v", verdict, changed)
	}
}
