package cli

import (
	"net/netip"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/nameindex"
)

// fixedNow is CLOCK_BOOTTIME as edgeplanectl reads it in the tests (testOpts.BootTime), so that
// conntrack's ages are stable.
const fixedNow = uint64(10000 * time.Second)

func fixedBootTime() (uint64, error) { return fixedNow, nil }

// fixedFrontends is lb_svc_map and lb_backend_map as edge-1's agent wrote them: DNS over UDP and
// TCP with a local and a remote backend; web with affinity and a missing slot, and its node port
// (externalTrafficPolicy Local); a node port closed by NodePort isolation; an external IP in both
// scopes served by a host network endpoint on edge-2 and a pod of a node the index does not know;
// an SCTP service without backends that the index does not name, whose only endpoint is on a node
// this node cannot reach; web's ClusterIP left out two such endpoints.
var fixedFrontends = []struct {
	vip     string
	port    uint16
	proto   lb.Proto
	scope   lb.Scope
	svc     lb.Svc
	missing uint32 // a slot left out of lb_backend_map (0: none)
	backs   []string
}{
	{"10.96.0.10", 53, lb.ProtoUDP, lb.ScopeInternal, lb.Svc{ID: 1}, 0, []string{"10.244.1.6:53", "10.244.2.7:53"}},
	{"10.96.0.10", 53, lb.ProtoTCP, lb.ScopeInternal, lb.Svc{ID: 2}, 0, []string{"10.244.1.6:53", "10.244.2.7:53"}},
	{"10.96.0.80", 80, lb.ProtoTCP, lb.ScopeInternal, lb.Svc{ID: 3, Flags: lb.FlagAffinity, AffinityTimeout: 10800, Unreachable: 2}, 2,
		[]string{"10.244.1.5:8080", "10.244.3.8:8080", "10.244.3.9:8080"}},
	{"0.0.0.0", 30080, lb.ProtoTCP, lb.ScopeExternal, lb.Svc{ID: 4, Flags: lb.FlagNodePort | lb.FlagLocal}, 0, []string{"10.244.1.5:8080"}},
	{"0.0.0.0", 30443, lb.ProtoTCP, lb.ScopeExternal, lb.Svc{Flags: lb.FlagNodePort | lb.FlagClosed}, 0, nil},
	{"203.0.113.10", 443, lb.ProtoTCP, lb.ScopeExternal, lb.Svc{ID: 5, Flags: lb.FlagExternalIP | lb.FlagLocal}, 0, []string{"10.244.1.5:8443"}},
	{"203.0.113.10", 443, lb.ProtoTCP, lb.ScopeInternal, lb.Svc{ID: 6, Flags: lb.FlagExternalIP}, 0, []string{"10.244.1.5:8443", "10.244.9.9:443", "192.168.1.12:443"}},
	{"10.96.0.99", 9000, lb.ProtoSCTP, lb.ScopeInternal, lb.Svc{ID: 7, Unreachable: 1}, 0, nil},
}

// fixedServices is names/services.json as edge-1's agent wrote it.
var fixedServices = []nameindex.Service{
	{Namespace: "kube-system", Name: "kube-dns", Frontends: []nameindex.Frontend{
		{IP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: "udp", Scope: "internal"},
		{IP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: "tcp", Scope: "internal"}}},
	{Namespace: "default", Name: "web", Frontends: []nameindex.Frontend{
		{IP: netip.MustParseAddr("10.96.0.80"), Port: 80, Proto: "tcp", Scope: "internal"},
		{IP: netip.IPv4Unspecified(), Port: 30080, Proto: "tcp", Scope: "external"}}},
	{Namespace: "default", Name: "admin", Frontends: []nameindex.Frontend{
		{IP: netip.IPv4Unspecified(), Port: 30443, Proto: "tcp", Scope: "external"}}},
	{Namespace: "default", Name: "ingress", Frontends: []nameindex.Frontend{
		{IP: netip.MustParseAddr("203.0.113.10"), Port: 443, Proto: "tcp", Scope: "external"},
		{IP: netip.MustParseAddr("203.0.113.10"), Port: 443, Proto: "tcp", Scope: "internal"}}},
}

// fixedConns is lb_ct_map as the programs left it, ages relative to fixedNow.
var fixedConns = []struct {
	proto                     lb.Proto
	client, frontend, backend string
	svcID                     uint32
	flags                     uint16
	fwdAge, revAge            time.Duration // -1: no such entry
}{
	// established TCP to web, the reply the newer packet
	{lb.ProtoTCP, "10.244.1.5:40000", "10.96.0.80:80", "10.244.3.8:8080", 3, lb.CTFlagSeenReply, 30 * time.Second, 29 * time.Second},
	// web-0 reached itself: hairpin
	{lb.ProtoTCP, "10.244.1.5:41000", "10.96.0.80:80", "10.244.1.5:8080", 3, lb.CTFlagSeenReply | lb.CTFlagHairpin, 2 * time.Second, 2 * time.Second},
	// DNS over UDP
	{lb.ProtoUDP, "10.244.1.5:33000", "10.96.0.10:53", "10.244.2.7:53", 1, lb.CTFlagSeenReply, 5 * time.Second, 5 * time.Second},
	// a node port SYN nobody answered, 90 s ago: expired
	{lb.ProtoTCP, "198.51.100.7:50000", "192.168.1.11:30080", "10.244.1.5:8080", 4, 0, 90 * time.Second, 90 * time.Second},
	// half-closed by its client, its REV entry evicted
	{lb.ProtoTCP, "10.244.1.6:42000", "10.96.0.10:53", "10.244.2.7:53", 2, lb.CTFlagSeenReply | lb.CTFlagClosing | lb.CTFlagFinFwd, 3 * time.Second, -1},
	// only the REV entry left, of a backend set replaced since (id 99), expired
	{lb.ProtoUDP, "10.244.1.6:34000", "10.96.0.10:53", "10.244.2.7:53", 99, lb.CTFlagSeenReply, -1, 70 * time.Second},
}

// fillServices writes the services maps of the fixture.
func (f *fixture) fillServices(t *testing.T) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	svcs, err := lb.OpenSvc(f.root)
	must(err)
	defer svcs.Close()
	backends, err := lb.OpenBackend(f.root)
	must(err)
	defer backends.Close()
	ip4 := func(s string) maps.IPv4 { return maps.IPv4(netip.MustParseAddr(s).As4()) }
	for _, fe := range fixedFrontends {
		v := fe.svc
		v.Count = uint16(len(fe.backs))
		must(svcs.Upsert(lb.SvcKey{VIP: ip4(fe.vip), Port: lb.PortFrom(fe.port), Proto: fe.proto, Scope: fe.scope}, v))
		for slot, b := range fe.backs {
			if fe.missing != 0 && uint32(slot) == fe.missing {
				continue
			}
			ap := netip.MustParseAddrPort(b)
			must(backends.Upsert(lb.BackendKey{SvcID: v.ID, Slot: uint32(slot)}, lb.Backend{IP: maps.IPv4(ap.Addr().As4()), Port: lb.PortFrom(ap.Port())}))
		}
	}

	ct, err := lb.OpenCT(f.root)
	must(err)
	defer ct.Close()
	for _, c := range fixedConns {
		client, frontend, backend := netip.MustParseAddrPort(c.client), netip.MustParseAddrPort(c.frontend), netip.MustParseAddrPort(c.backend)
		v := lb.CT{Addr: maps.IPv4(backend.Addr().As4()), Port: lb.PortFrom(backend.Port()), Flags: c.flags, SvcID: c.svcID}
		if c.fwdAge >= 0 {
			v.LastSeen = fixedNow - uint64(c.fwdAge)
			must(ct.Upsert(lb.CTKey{Saddr: maps.IPv4(client.Addr().As4()), Daddr: maps.IPv4(frontend.Addr().As4()),
				Sport: lb.PortFrom(client.Port()), Dport: lb.PortFrom(frontend.Port()), Proto: c.proto, Dir: lb.DirFwd}, v))
		}
		if c.revAge >= 0 {
			replyTo := maps.IPv4(client.Addr().As4())
			if c.flags&lb.CTFlagHairpin != 0 {
				replyTo = hairpinIP
			}
			v.Addr, v.Port, v.LastSeen = maps.IPv4(frontend.Addr().As4()), lb.PortFrom(frontend.Port()), fixedNow-uint64(c.revAge)
			must(ct.Upsert(lb.CTKey{Saddr: maps.IPv4(backend.Addr().As4()), Daddr: replyTo,
				Sport: lb.PortFrom(backend.Port()), Dport: lb.PortFrom(client.Port()), Proto: c.proto, Dir: lb.DirRev}, v))
		}
	}
}

func TestSeconds(t *testing.T) {
	for s, want := range map[uint64]string{0: "0s", 45: "45s", 60: "1m", 125: "2m5s", 21600: "6h", 3603: "1h0m3s"} {
		if got := seconds(s); got != want {
			t.Errorf("seconds(%d) = %q, want %q", s, got, want)
		}
	}
}
