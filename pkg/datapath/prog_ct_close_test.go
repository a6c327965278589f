package datapath

// The TCP close of a service connection (bpf/lib/lb_ct.h): tracked per direction, so that a
// half-closed connection (the client shut down its write side) keeps carrying the backend's data
// for as long as Linux conntrack would (kube-proxy's CLOSE_WAIT), and only FINs from both sides or
// an RST shorten its entries' lives. Time is simulated by moving the entries' last_seen back.

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

var (
	closeFwdKey = ctKey(podA, 40000, svcVIP, 80, protoTCP, ctFwd)
	closeRevKey = ctKey(podB, 8080, podA, 40000, protoTCP, ctRev)
)

// openClose sets up a connection from pod A to the frontend svcVIP:80 with backend pod B, both
// behind pod_egress on this node, up to the client's ACK of the handshake, and returns a function sending a packet from either side
// (fromBackend) with TCP flags, which reports whether the packet left translated as the
// connection's (the client's to pod B, the backend's from the frontend).
func openClose(t *testing.T) (send func(fromBackend bool, flags uint8) bool, age func(d time.Duration)) {
	t.Helper()
	coll, send := openCloseColl(t)
	age = func(d time.Duration) {
		t.Helper()
		ageCT(t, coll, closeFwdKey, d)
		ageCT(t, coll, closeRevKey, d)
		// A new connection would get the new set: a packet still going to pod B is the old one's.
		putSvc(t, coll, svcVIP, 80, protoTCP, 2, 0, 0, backend{remotePod, 9090})
	}
	return send, age
}

// openCloseColl is openClose's connection in a collection whose node_cfg takes opts.
func openCloseColl(t *testing.T, opts ...cfgOpt) (*ebpf.Collection, func(fromBackend bool, flags uint8) bool) {
	t.Helper()
	coll := newCollection(t, loadPod)
	lbCluster(t, coll, opts...)
	prog := coll.Programs["pod_egress"]
	putSvc(t, coll, svcVIP, 80, protoTCP, 1, 0, 0, backend{podB, 8080})
	send := func(fromBackend bool, flags uint8) bool {
		t.Helper()
		if fromBackend {
			sendAs(t, coll, podB)
			got, out := run(t, prog, podSend(protoTCP, podB, 8080, podA, 40000, flags), nil)
			if got != tcActRedirect {
				t.Fatalf("backend's packet: verdict %d", got)
			}
			p := parseIP(t, out[14:])
			return p.src == svcVIP
		}
		sendAs(t, coll, podA)
		got, out := run(t, prog, podSend(protoTCP, podA, 40000, svcVIP, 80, flags), nil)
		if got != tcActRedirect {
			t.Fatalf("client's packet: verdict %d", got)
		}
		p := parseIP(t, out[14:])
		return p.dst == podB
	}
	if !send(false, tcpSYN) || !send(true, tcpSYN|tcpACK) || !send(false, tcpACK) {
		t.Fatal("handshake not translated")
	}
	return coll, send
}

// The Kubernetes e2e "Conntrack proxy implementation should not be vulnerable to the invalid
// conntrack state bug" case, and any HTTP client that shuts down its write side: the client sends
// its FIN first, the backend keeps sending for longer than 10 s, then closes.
func TestServiceHalfClosedKeepsCarryingData(t *testing.T) {
	send, age := openClose(t)
	if !send(false, tcpFIN|tcpACK) {
		t.Fatal("client's FIN not translated")
	}
	for _, idle := range []time.Duration{11 * time.Second, 61 * time.Second, 50 * time.Minute} {
		age(idle)
		if !send(true, tcpACK) {
			t.Fatalf("half-closed %v: the backend's data left untranslated (the client answers it with an RST)", idle)
		}
		if !send(false, tcpACK) {
			t.Fatalf("half-closed %v: the client's ACK went to another backend", idle)
		}
	}
	// The backend closes its side too, a while later.
	age(20 * time.Second)
	if !send(true, tcpFIN|tcpACK) {
		t.Fatal("the backend's FIN, 20 s after the last packet of a half-closed connection, left untranslated")
	}
	if !send(false, tcpACK) {
		t.Fatal("the client's last ACK went to another backend")
	}
}

// lb.h's per-direction close flags.
const (
	ctFinFwd = 1 << 4
	ctFinRev = 1 << 5
	ctRST    = 1 << 6
)

// closeStep is a packet of openClose's connection: the backend's or the client's, with TCP flags.
type closeStep struct {
	fromBackend bool
	flags       uint8
}

// Each side's FIN and an RST are recorded on both entries of the connection, with CLOSING (what an
// older program reads).
func TestServiceTCPCloseFlags(t *testing.T) {
	for _, tt := range []struct {
		name  string
		steps []closeStep
		want  uint16
	}{
		{"client FIN", []closeStep{{false, tcpFIN | tcpACK}}, ctClosing | ctFinFwd},
		{"backend FIN", []closeStep{{true, tcpFIN | tcpACK}}, ctClosing | ctFinRev},
		{"both FINs", []closeStep{{false, tcpFIN | tcpACK}, {true, tcpFIN | tcpACK}}, ctClosing | ctFinFwd | ctFinRev},
		{"client RST", []closeStep{{false, tcpRST}}, ctClosing | ctRST},
		{"backend RST after client FIN", []closeStep{{false, tcpFIN | tcpACK}, {true, tcpRST | tcpACK}}, ctClosing | ctFinFwd | ctRST},
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll, send := openCloseColl(t)
			for _, s := range tt.steps {
				if !send(s.fromBackend, s.flags) {
					t.Fatalf("packet with flags %#x not translated", s.flags)
				}
			}
			for _, k := range []podLbCtKey{closeFwdKey, closeRevKey} {
				v, _ := ctGet(t, coll, k)
				if got := v.Flags &^ ctSeenReply; got != tt.want {
					t.Errorf("dir %d: close flags %#x, want %#x", k.Dir, got, tt.want)
				}
			}
		})
	}
}

// How long an entry lives after its last packet, by close state, with lb.h's defaults and with
// the timeouts the agent writes into node_cfg (--ct-tcp-*-timeout).
func TestServiceTCPCloseTimeouts(t *testing.T) {
	configured := func(c *podNodeCfg) { c.CtTcpCloseWait, c.CtTcpTimeWait, c.CtTcpClose = 300, 40, 3 }
	for _, tt := range []struct {
		name  string
		cfg   []cfgOpt
		flags uint16 // both entries'
		age   time.Duration
		alive bool
	}{
		{"client half-close within 1 h", nil, ctClosing | ctFinFwd, 59 * time.Minute, true},
		{"client half-close after 1 h", nil, ctClosing | ctFinFwd, 61 * time.Minute, false},
		{"backend half-close within 1 h", nil, ctClosing | ctFinRev, 59 * time.Minute, true},
		{"backend half-close after 1 h", nil, ctClosing | ctFinRev, 61 * time.Minute, false},
		{"both FINs within 120 s", nil, ctClosing | ctFinFwd | ctFinRev, 119 * time.Second, true},
		{"both FINs after 120 s", nil, ctClosing | ctFinFwd | ctFinRev, 121 * time.Second, false},
		{"RST within 10 s", nil, ctClosing | ctRST, 9 * time.Second, true},
		{"RST after 10 s", nil, ctClosing | ctRST, 11 * time.Second, false},
		{"RST after a half-close, after 10 s", nil, ctClosing | ctFinFwd | ctRST, 11 * time.Second, false},
		{"older program's CLOSING within 120 s", nil, ctClosing, 119 * time.Second, true},
		{"older program's CLOSING after 120 s", nil, ctClosing, 121 * time.Second, false},
		{"configured half-close within 300 s", []cfgOpt{configured}, ctClosing | ctFinFwd, 299 * time.Second, true},
		{"configured half-close after 300 s", []cfgOpt{configured}, ctClosing | ctFinFwd, 301 * time.Second, false},
		{"configured both FINs within 40 s", []cfgOpt{configured}, ctClosing | ctFinFwd | ctFinRev, 39 * time.Second, true},
		{"configured both FINs after 40 s", []cfgOpt{configured}, ctClosing | ctFinFwd | ctFinRev, 41 * time.Second, false},
		{"configured RST within 3 s", []cfgOpt{configured}, ctClosing | ctRST, 2 * time.Second, true},
		{"configured RST after 3 s", []cfgOpt{configured}, ctClosing | ctRST, 4 * time.Second, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			coll, send := openCloseColl(t, tt.cfg...)
			for _, k := range []podLbCtKey{closeFwdKey, closeRevKey} {
				v, _ := ctGet(t, coll, k)
				v.Flags = ctSeenReply | tt.flags
				v.LastSeen = bootNow(t) - uint64(tt.age)
				put(t, coll, "lb_ct_map", k, v)
			}
			putSvc(t, coll, svcVIP, 80, protoTCP, 2, 0, 0, backend{remotePod, 9090})
			// The backend's packet is translated while its connection lives.
			if got := send(true, tcpACK); got != tt.alive {
				t.Errorf("backend's packet translated: %v, want %v", got, tt.alive)
			}
		})
	}
}
