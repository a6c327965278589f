package maptables

import (
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/datapath/bpffstest"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// openTables loads the committed datapath into a private bpffs and opens its maps as the agent does.
func openTables(t *testing.T) *Tables {
	t.Helper()
	root := filepath.Join(bpffstest.Mount(t), "edgeplane")
	dp, err := datapath.Load(root)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	t.Cleanup(func() { dp.Close() })
	tbl, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tbl.Close(); err != nil {
			t.Error(err)
		}
	})
	return tbl
}

// TestTablesRoundTrip: what each table writes through the controller's interface it lists back
// the same, over the real pinned maps.
func TestTablesRoundTrip(t *testing.T) {
	tbl := openTables(t)
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

	prefix := netip.MustParsePrefix("10.244.1.0/24")
	route := controller.Route{NodeIP: netip.MustParseAddr("172.30.0.12"), Domain: domain.ID("site-a"), Encap: controller.EncapDirect, Local: true}
	if err := tbl.Routes().Upsert(prefix, route); err != nil {
		t.Fatal(err)
	}
	if got, err := tbl.Routes().List(); err != nil || !maps.Equal(got, map[netip.Prefix]controller.Route{prefix: route}) {
		t.Errorf("routes %v %v, want %v", got, err, route)
	}

	nodeIP := netip.MustParseAddr("172.30.0.12")
	node := controller.Node{VTEPMAC: mac("0a:00:00:00:00:12"), NextHopMAC: mac("0a:00:00:00:00:01"), Domain: domain.ID("site-a")}
	if err := tbl.Nodes().Upsert(nodeIP, node); err != nil {
		t.Fatal(err)
	}
	if got, err := tbl.Nodes().List(); err != nil || len(got) != 1 || got[nodeIP].VTEPMAC.String() != node.VTEPMAC.String() ||
		got[nodeIP].NextHopMAC.String() != node.NextHopMAC.String() || got[nodeIP].Domain != node.Domain {
		t.Errorf("nodes %v %v, want %v", got, err, node)
	}

	dom := controller.Domain{Name: "site-a", Reachable: true, Local: true}
	if err := tbl.Domains().Upsert(domain.ID("site-a"), dom); err != nil {
		t.Fatal(err)
	}
	if got, err := tbl.Domains().List(); err != nil || !maps.Equal(got, map[uint32]controller.Domain{domain.ID("site-a"): dom}) {
		t.Errorf("domains %v %v, want %v", got, err, dom)
	}

	fk := service.FrontendKey{VIP: netip.MustParseAddr("198.51.100.2"), Port: 443, Proto: service.ProtoSCTP, Scope: service.ScopeExternal}
	entry := controller.ServiceEntry{ID: 7, Count: 2, Flags: service.FlagExternalIP | service.FlagLocal | service.FlagAffinity, AffinityTimeout: 60, Unreachable: 1}
	if err := tbl.Frontends().Upsert(fk, entry); err != nil {
		t.Fatal(err)
	}
	if got, err := tbl.Frontends().List(); err != nil || !maps.Equal(got, map[service.FrontendKey]controller.ServiceEntry{fk: entry}) {
		t.Errorf("frontends %v %v, want %v", got, err, entry)
	}

	set := []service.Backend{{IP: netip.MustParseAddr("10.244.1.5"), Port: 8443}, {IP: netip.MustParseAddr("10.244.2.5"), Port: 8443}}
	if err := tbl.Backends().(controller.BackendSetWriter).UpsertSet(7, set); err != nil {
		t.Fatal(err)
	}
	want := map[controller.BackendSlot]service.Backend{{ID: 7, Slot: 0}: set[0], {ID: 7, Slot: 1}: set[1]}
	if got, err := tbl.Backends().List(); err != nil || !maps.Equal(got, want) {
		t.Errorf("backends %v %v, want %v", got, err, want)
	}
	walked := map[controller.BackendSlot]service.Backend{}
	if err := tbl.Backends().(controller.BackendWalker).Walk(func(s controller.BackendSlot, b service.Backend) { walked[s] = b }); err != nil || !maps.Equal(walked, want) {
		t.Errorf("walked %v %v, want %v", walked, err, want)
	}

	ak := controller.AffinityKey{ID: 7, Client: netip.MustParseAddr("10.244.3.9")}
	aff := controller.Affinity{Backend: set[1], LastSeen: 12345}
	if err := tbl.Affinity().Upsert(ak, aff); err != nil {
		t.Fatal(err)
	}
	if got, err := tbl.Affinity().List(); err != nil || !maps.Equal(got, map[controller.AffinityKey]controller.Affinity{ak: aff}) {
		t.Errorf("affinity %v %v, want %v", got, err, aff)
	}

	for name, del := range map[string]func() error{
		"route": func() error { return tbl.Routes().Delete(prefix) }, "node": func() error { return tbl.Nodes().Delete(nodeIP) },
		"domain": func() error { return tbl.Domains().Delete(domain.ID("site-a")) }, "frontend": func() error { return tbl.Frontends().Delete(fk) },
		"backend":  func() error { return tbl.Backends().Delete(controller.BackendSlot{ID: 7, Slot: 1}) },
		"affinity": func() error { return tbl.Affinity().Delete(ak) },
	} {
		if err := del(); err != nil {
			t.Errorf("deleting the %s: %v", name, err)
		}
		if err := del(); err != nil {
			t.Errorf("deleting the %s again: %v", name, err)
		}
	}
	if got, _ := tbl.Frontends().List(); len(got) != 0 {
		t.Errorf("frontends after delete: %v", got)
	}
	if got, _ := tbl.Endpoints().List(); len(got) != 0 {
		t.Errorf("endpoints of a fresh datapath: %v", got)
	}
}

// TestOpenMissingMaps: Open of a root without the pinned maps fails and leaves nothing open.
func TestOpenMissingMaps(t *testing.T) {
	if tbl, err := Open(t.TempDir()); err == nil {
		tbl.Close()
		t.Fatal("opened the maps of an empty directory")
	}
}
