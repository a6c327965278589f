package datapath

// Services (bpf/lib/lb_xlate.h): pods' and the node's connections to frontends, translated per
// packet; replies reverse-translated wherever they are delivered.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
)

func TestServiceForward(t *testing.T) {
	for _, proto := range []uint8{protoTCP, protoUDP} {
		for _, tt := range []struct {
			name    string
			backend backend
			remote  bool
		}{
			{"local backend", backend{podB, 8080}, false},
			{"remote backend", backend{remotePod, 8080}, true},
			{"same port", backend{podB, 80}, false},
		} {
			t.Run(fmt.Sprintf("proto %d %s", proto, tt.name), func(t *testing.T) {
				coll := newCollection(t, loadPod)
				lbCluster(t, coll)
				putSvc(t, coll, svcVIP, 80, proto, 7, 0, 0, tt.backend)
				flags := uint8(tcpSYN)
				in := podSend(proto, podA, 40000, svcVIP, 80, flags)
				before := bootNow(t)
				got, out := run(t, coll.Programs["pod_egress"], in, nil)
				if got != tcActRedirect {
					t.Fatalf("verdict %d, want TC_ACT_REDIRECT", got)
				}
				ipOff := 14
				if tt.remote {
					ipOff = 14 + 50 // VXLAN toward the backend's node
					checkVXLAN(t, out, append(bytes.Clone(out[:14]), out[ipOff:]...), true)
				} else if dst, src := macs(out); dst != podBMAC || src != podBHostMAC {
					t.Errorf("MACs dst %x src %x, want pod B's", dst, src)
				}
				p := checkTuple(t, out[ipOff:], podA, 40000, tt.backend.ip, tt.backend.port)
				if !bytes.Equal(p.payload[len(p.payload)-5:], []byte("hello")) {
					t.Errorf("payload changed")
				}

				fwd, ok := ctGet(t, coll, ctKey(podA, 40000, svcVIP, 80, proto, ctFwd))
				if !ok || addrOf(fwd.Addr) != tt.backend.ip || beToHost16(fwd.Port) != tt.backend.port || fwd.SvcId != 7 || fwd.Flags != 0 {
					t.Errorf("FWD entry %+v (found %v), want backend %v, svc 7", fwd, ok, tt.backend)
				}
				if fwd.LastSeen < before || fwd.LastSeen > bootNow(t) {
					t.Errorf("FWD last_seen %d not between %d and now", fwd.LastSeen, before)
				}
				rev, ok := ctGet(t, coll, ctKey(tt.backend.ip, tt.backend.port, podA, 40000, proto, ctRev))
				if !ok || addrOf(rev.Addr) != svcVIP || beToHost16(rev.Port) != 80 || rev.SvcId != 7 {
					t.Errorf("REV entry %+v (found %v), want frontend %v:80", rev, ok, svcVIP)
				}
			})
		}
	}
}

func TestServiceUDPWithoutChecksum(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 53, protoUDP, 1, 0, 0, backend{podB, 5353})
	in := podPacket(podA, svcVIP, udpSeg(podA, svcVIP, 40000, 53, []byte("q"), false), protoUDP, true)
	if got, out := run(t, coll.Programs["pod_egress"], in, nil); got != tcActRedirect {
		t.Fatalf("verdict %d", got)
	} else if p := checkTuple(t, out[14:], podA, 40000, podB, 5353); binary.BigEndian.Uint16(p.payload[6:]) != 0 {
		t.Errorf("UDP checksum %#x, want 0 (none) kept", binary.BigEndian.Uint16(p.payload[6:]))
	}
}

func TestServiceNotAService(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	prog := coll.Programs["pod_egress"]
	for _, tt := range []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"another port of the VIP", podSend(protoTCP, podA, 40000, svcVIP, 81, tcpSYN), tcActOK},
		{"another protocol on the port", podSend(protoUDP, podA, 40000, svcVIP, 80, 0), tcActOK},
		{"ICMP to the VIP", podPacket(podA, svcVIP, icmpMsg(8, 0, echoRest(1, 1), nil), protoICMP, true), tcActOK},
		{"local pod", podSend(protoTCP, podA, 40000, podB, 80, tcpSYN), tcActRedirect},
		{"outside the cluster", podSend(protoUDP, podA, 40000, internetIP, 53, 0), tcActOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, out := run(t, prog, tt.pkt, nil)
			if got != tt.want {
				t.Fatalf("verdict %d, want %d", got, tt.want)
			}
			want := tt.pkt
			if got == tcActRedirect { // routed to the local pod: one hop
				want = routed(tt.pkt, 14)
			}
			if !bytes.Equal(out[12:len(tt.pkt)], want[12:]) {
				t.Errorf("IP packet changed")
			}
		})
	}
	var k podLbCtKey
	var v podLbCt
	if coll.Maps["lb_ct_map"].Iterate().Next(&k, &v) {
		t.Errorf("connection tracked for non-service traffic: %+v", k)
	}
}

func TestServiceEstablishedKeepsBackend(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), nil)

	// The agent moves the frontend to a new backend set (new id, slots first) without pod B.
	putSvc(t, coll, svcVIP, 80, protoTCP, 2, 0, 0, backend{remotePod, 9090})
	_, out := run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpACK), nil)
	checkTuple(t, out[14:], podA, 40000, podB, 8080)
	// A new connection gets the new set.
	_, out = run(t, prog, podSend(protoTCP, podA, 40001, svcVIP, 80, tcpSYN), nil)
	checkTuple(t, out[64:], podA, 40001, remotePod, 9090)
	// So does one without backends left: established connections keep theirs.
	putSvc(t, coll, svcVIP, 80, protoTCP, 3, 0, 0)
	if got, out := run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpACK), nil); got != tcActRedirect {
		t.Fatalf("established connection to an emptied service: verdict %d", got)
	} else {
		checkTuple(t, out[14:], podA, 40000, podB, 8080)
	}
}

func TestServiceSpreads(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	backends := []backend{{podB, 8080}, {remotePod, 8080}, {remotePod2, 8080}, {remotePod3, 8080}}
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backends...)
	prog := coll.Programs["pod_egress"]
	const n = 400
	count := map[backend]int{}
	for i := range n {
		sport := uint16(30000 + i)
		if got, _ := run(t, prog, podSend(protoTCP, podA, sport, svcVIP, 80, tcpSYN), nil); got != tcActRedirect {
			t.Fatalf("verdict %d", got)
		}
		count[ctBackend(t, coll, podA, sport, protoTCP)]++
	}
	for _, b := range backends {
		if c := count[b]; c < n/len(backends)/2 || c > n/len(backends)*3/2 {
			t.Errorf("backend %v got %d of %d connections: %v", b, c, n, count)
		}
	}
	// The same tuple hashes to the same backend: a connection whose entry is lost comes back to it.
	first := ctBackend(t, coll, podA, 30000, protoTCP)
	if err := coll.Maps["lb_ct_map"].Delete(ctKey(podA, 30000, svcVIP, 80, protoTCP, ctFwd)); err != nil {
		t.Fatal(err)
	}
	run(t, prog, podSend(protoTCP, podA, 30000, svcVIP, 80, tcpACK), nil)
	if again := ctBackend(t, coll, podA, 30000, protoTCP); again != first {
		t.Errorf("lost entry: %v, then %v", first, again)
	}
}

func TestServiceAffinity(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	backends := []backend{{podB, 8080}, {remotePod, 8080}, {remotePod2, 8080}, {remotePod3, 8080}}
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, svcAffinity, 10, backends...)
	prog := coll.Programs["pod_egress"]

	run(t, prog, podSend(protoTCP, podA, 30000, svcVIP, 80, tcpSYN), nil)
	first := ctBackend(t, coll, podA, 30000, protoTCP)
	var aff podLbAffinity
	if err := coll.Maps["lb_affinity_map"].Lookup(podLbAffinityKey{SvcId: 1, Client: be32(podA)}, &aff); err != nil {
		t.Fatalf("no affinity entry: %v", err)
	}
	if addrOf(aff.Ip) != first.ip || beToHost16(aff.Port) != first.port {
		t.Errorf("affinity %v:%d, want %v", addrOf(aff.Ip), beToHost16(aff.Port), first)
	}
	for i := 1; i < 40; i++ {
		sport := uint16(30000 + i)
		run(t, prog, podSend(protoTCP, podA, sport, svcVIP, 80, tcpSYN), nil)
		if b := ctBackend(t, coll, podA, sport, protoTCP); b != first {
			t.Fatalf("connection %d went to %v, want %v (affinity)", i, b, first)
		}
	}

	// An affinity to a backend the hash would never pick (not in the slots), renewed 9 s ago:
	// sticks; 11 s ago: expired, the hash decides and the affinity is renewed to its choice.
	sticky := backend{netip.MustParseAddr("10.244.2.99"), 9999}
	for i, tt := range []struct {
		age  time.Duration
		want bool
	}{{9 * time.Second, true}, {11 * time.Second, false}} {
		put(t, coll, "lb_affinity_map", podLbAffinityKey{SvcId: 1, Client: be32(podA)},
			podLbAffinity{Ip: be32(sticky.ip), Port: be16(sticky.port), LastSeen: bootNow(t) - uint64(tt.age)})
		sport := uint16(31000 + i)
		run(t, prog, podSend(protoTCP, podA, sport, svcVIP, 80, tcpSYN), nil)
		if b := ctBackend(t, coll, podA, sport, protoTCP); (b == sticky) != tt.want {
			t.Errorf("affinity renewed %v ago: backend %v, sticky %v", tt.age, b, tt.want)
		}
	}
	if err := coll.Maps["lb_affinity_map"].Lookup(podLbAffinityKey{SvcId: 1, Client: be32(podA)}, &aff); err != nil || addrOf(aff.Ip) == sticky.ip {
		t.Errorf("expired affinity not replaced: %v:%d (%v)", addrOf(aff.Ip), beToHost16(aff.Port), err)
	}
	// Another client has its own affinity.
	sendAs(t, coll, podB)
	run(t, prog, podSend(protoTCP, podB, 30000, svcVIP, 80, tcpSYN), nil)
	if err := coll.Maps["lb_affinity_map"].Lookup(podLbAffinityKey{SvcId: 1, Client: be32(podB)}, &aff); err != nil {
		t.Errorf("no affinity entry for pod B: %v", err)
	}
}

// checkPortUnreach verifies that out is ICMP "port unreachable" from the frontend to the pod,
// quoting the packet the pod sent (to the frontend, untranslated).
func checkPortUnreach(t *testing.T, out, in []byte) {
	t.Helper()
	if len(out) != 14+28+icmpUnreachQuote {
		t.Fatalf("answer is %d bytes, want %d", len(out), 14+28+icmpUnreachQuote)
	}
	dst, src := macs(out)
	if dst != podAMAC || src != podAHostMAC {
		t.Errorf("MACs dst %x src %x, want the pod's swapped", dst, src)
	}
	ip := parseIP(t, out[14:])
	if ip.proto != protoICMP || ip.src != svcVIP || ip.dst != podA {
		t.Errorf("IP proto %d %v -> %v, want ICMP %v -> %v", ip.proto, ip.src, ip.dst, svcVIP, podA)
	}
	checkL4Csum(t, ip)
	if ip.payload[0] != 3 || ip.payload[1] != 3 {
		t.Errorf("ICMP type %d code %d, want 3/3 (port unreachable)", ip.payload[0], ip.payload[1])
	}
	want := make([]byte, icmpUnreachQuote)
	copy(want, in[14:])
	if quote := ip.payload[8:]; !bytes.Equal(quote, want) {
		t.Errorf("quote:\n got % x\nwant % x", quote, want)
	}
}

func TestServiceWithoutBackends(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0)
	putSvc(t, coll, svcVIP, 53, protoUDP, 2, 0, 0)
	prog := coll.Programs["pod_egress"]
	for _, in := range [][]byte{
		podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN),
		podSend(protoUDP, podA, 40000, svcVIP, 53, 0),
	} {
		drops, sent := metric(t, coll, dirPodEgress, dropreason.NoServiceBackend), metric(t, coll, dirPodEgress, dropreason.ICMPSent)
		got, out := run(t, prog, in, nil)
		if got != tcActRedirect {
			t.Fatalf("verdict %d, want the ICMP answer redirected back into the pod", got)
		}
		checkPortUnreach(t, out, in)
		if d, s := metric(t, coll, dirPodEgress, dropreason.NoServiceBackend), metric(t, coll, dirPodEgress, dropreason.ICMPSent); d != drops+1 || s != sent+1 {
			t.Errorf("NO_SERVICE_BACKEND %d -> %d, ICMP_SENT %d -> %d; want +1 each", drops, d, sent, s)
		}
	}
	// A torn set (a slot missing) is dropped the same way rather than sent nowhere.
	put(t, coll, "lb_svc_map", podLbSvcKey{Vip: be32(svcVIP), Port: be16(80), Proto: protoTCP}, podLbSvc{Id: 9, Count: 2})
	drops := metric(t, coll, dirPodEgress, dropreason.NoServiceBackend)
	run(t, prog, podSend(protoTCP, podA, 40001, svcVIP, 80, tcpSYN), nil)
	if metric(t, coll, dirPodEgress, dropreason.NoServiceBackend) != drops+1 {
		t.Error("torn backend set not counted as NO_SERVICE_BACKEND")
	}
	// A closed frontend (NodePort isolation) is not answered.
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, svcClosed, 0)
	if got, _ := run(t, prog, podSend(protoTCP, podA, 40002, svcVIP, 80, tcpSYN), nil); got != tcActShot || metric(t, coll, dirPodEgress, dropreason.NodePortClosed) != 1 {
		t.Errorf("closed frontend: verdict %d, NODEPORT_CLOSED %d", got, metric(t, coll, dirPodEgress, dropreason.NodePortClosed))
	}
}

func TestServiceTimeouts(t *testing.T) {
	for _, tt := range []struct {
		name  string
		proto uint8
		flags uint16 // FWD entry's
		age   time.Duration
		alive bool
	}{
		{"UDP within 60 s", protoUDP, 0, 59 * time.Second, true},
		{"UDP after 60 s", protoUDP, 0, 61 * time.Second, false},
		{"TCP unanswered within 60 s", protoTCP, 0, 59 * time.Second, true},
		{"TCP unanswered after 60 s", protoTCP, 0, 61 * time.Second, false},
		{"TCP established after 60 s", protoTCP, ctSeenReply, 61 * time.Second, true},
		{"TCP established after 6 h", protoTCP, ctSeenReply, 6*time.Hour + time.Second, false},
		// An older program's CLOSING, direction unknown: the time-wait (prog_ct_close_test.go has the rest).
		{"TCP closing within 120 s", protoTCP, ctSeenReply | ctClosing, 119 * time.Second, true},
		{"TCP closing after 120 s", protoTCP, ctSeenReply | ctClosing, 121 * time.Second, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll := newCollection(t, loadPod)
			lbCluster(t, coll)
			prog := coll.Programs["pod_egress"]
			putSvc(t, coll, svcVIP, 80, tt.proto, 1, 0, 0, backend{podB, 8080})
			run(t, prog, podSend(tt.proto, podA, 40000, svcVIP, 80, tcpSYN), nil)
			k := ctKey(podA, 40000, svcVIP, 80, tt.proto, ctFwd)
			v, _ := ctGet(t, coll, k)
			v.Flags = tt.flags
			v.LastSeen = bootNow(t) - uint64(tt.age)
			put(t, coll, "lb_ct_map", k, v)
			// The set changes: a live connection stays, a dead one is new and gets the new set.
			putSvc(t, coll, svcVIP, 80, tt.proto, 2, 0, 0, backend{remotePod, 9090})
			got, out := run(t, prog, podSend(tt.proto, podA, 40000, svcVIP, 80, tcpACK), nil)
			if got != tcActRedirect {
				t.Fatalf("verdict %d", got)
			}
			if tt.alive {
				checkTuple(t, out[14:], podA, 40000, podB, 8080)
			} else {
				checkTuple(t, out[64:], podA, 40000, remotePod, 9090)
				if rev, ok := ctGet(t, coll, ctKey(remotePod, 9090, podA, 40000, tt.proto, ctRev)); !ok || addrOf(rev.Addr) != svcVIP {
					t.Errorf("new REV entry missing: %+v", rev)
				}
			}
			if v, _ := ctGet(t, coll, k); bootNow(t)-v.LastSeen > uint64(time.Second) {
				t.Errorf("last_seen not refreshed")
			}
		})
	}
}

func TestServiceTCPClose(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	fwdKey := ctKey(podA, 40000, svcVIP, 80, protoTCP, ctFwd)
	revKey := ctKey(podB, 8080, podA, 40000, protoTCP, ctRev)
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), nil)

	// The backend resets: both entries are closing (10 s after an RST).
	sendAs(t, coll, podB)
	run(t, prog, podSend(protoTCP, podB, 8080, podA, 40000, tcpRST|tcpACK), nil)
	for _, k := range []podLbCtKey{fwdKey, revKey} {
		if v, _ := ctGet(t, coll, k); v.Flags&ctClosing == 0 {
			t.Errorf("entry dir %d flags %#x, want CLOSING", k.Dir, v.Flags)
		}
	}
	// The client's next SYN on that tuple is a new connection: it gets the current set.
	putSvc(t, coll, svcVIP, 80, protoTCP, 2, 0, 0, backend{remotePod, 9090})
	sendAs(t, coll, podA)
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpACK), nil)
	if b := ctBackend(t, coll, podA, 40000, protoTCP); b != (backend{podB, 8080}) {
		t.Errorf("late ACK of the closing connection went to %v", b)
	}
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpSYN), nil)
	if b := ctBackend(t, coll, podA, 40000, protoTCP); b != (backend{remotePod, 9090}) {
		t.Errorf("SYN reusing a closing tuple went to %v, want the new set", b)
	}
	if v, _ := ctGet(t, coll, fwdKey); v.Flags&ctClosing != 0 {
		t.Errorf("new connection's entry is closing: %#x", v.Flags)
	}
	// The client's FIN closes it too.
	run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, tcpFIN|tcpACK), nil)
	if v, _ := ctGet(t, coll, fwdKey); v.Flags&ctClosing == 0 {
		t.Errorf("FIN: flags %#x, want CLOSING", v.Flags)
	}
	if v, _ := ctGet(t, coll, ctKey(remotePod, 9090, podA, 40000, protoTCP, ctRev)); v.Flags&ctClosing == 0 {
		t.Errorf("FIN: REV flags %#x, want CLOSING", v.Flags)
	}
}

// A one-way UDP stream: only the client's packets, which also keep the backend's REV entry alive
// (refreshed at least about once a second), so a late answer is still translated and the agent's
// garbage collector, judging each entry on its own, keeps both.
func TestServiceOneWayKeepsBothEntries(t *testing.T) {
	coll := newCollection(t, loadPod)
	lbCluster(t, coll)
	prog := coll.Programs["pod_egress"]
	putSvc(t, coll, svcVIP, 80, protoUDP, 1, 0, 0, backend{podB, 8080})
	run(t, prog, podSend(protoUDP, podA, 40000, svcVIP, 80, 0), nil)
	revKey := ctKey(podB, 8080, podA, 40000, protoUDP, ctRev)
	ageCT(t, coll, revKey, 50*time.Second)
	ageCT(t, coll, ctKey(podA, 40000, svcVIP, 80, protoUDP, ctFwd), 2*time.Second) // the previous packet
	run(t, prog, podSend(protoUDP, podA, 40000, svcVIP, 80, 0), nil)
	if rev, _ := ctGet(t, coll, revKey); bootNow(t)-rev.LastSeen > uint64(time.Second) {
		t.Errorf("REV entry last seen %v ago, want refreshed by the client's packet", time.Duration(bootNow(t)-rev.LastSeen))
	}
}
