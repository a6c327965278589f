package cli

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgeplane/edgeplane/pkg/bgp/bgpstatus"
)

var bgpNow = time.Date(2026, 12, 6, 6, 30, 0, 0, time.UTC)

// bgpReport is a speaker on a site node: one gateway established (it sent a default route), the
// other segment's down since its hold timer expired.
func bgpReport() *bgpstatus.Report {
	return &bgpstatus.Report{
		Node: "a1", Domain: "site-a", Speaking: true,
		RouterID: netip.MustParseAddr("172.31.0.11"), LocalASN: 64512,
		Advertised: []bgpstatus.Advertisement{
			{Prefix: netip.MustParsePrefix("10.244.1.0/24"), NextHop: netip.MustParseAddr("172.31.0.11")},
			{Prefix: netip.MustParsePrefix("10.244.4.0/24"), NextHop: netip.MustParseAddr("172.31.0.14")},
		},
		Peers: []bgpstatus.PeerStatus{
			{Address: netip.MustParseAddr("172.31.0.1"), ASN: 65000, LocalASN: 64512, State: bgpstatus.StateEstablished,
				RouterID: netip.MustParseAddr("172.31.0.1"), Since: bgpNow.Add(-5*time.Minute - 3*time.Second),
				HoldTimeSeconds: 30, Advertised: 2, Received: 1, GracefulRestart: true,
				ReceivedRoutes: []bgpstatus.Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"),
					NextHop: netip.MustParseAddr("172.31.0.1"), ASPath: []uint32{65000}}}},
			{Address: netip.MustParseAddr("172.31.1.1"), ASN: 65000, LocalASN: 64512, State: bgpstatus.StateActive,
				Since: bgpNow.Add(-2 * time.Hour), LastError: "HOLD_TIMER_EXPIRED"},
		},
		Updated: bgpNow.Add(-4 * time.Second),
	}
}

func runBGP(t *testing.T, runDir string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	opts := testOpts
	opts.Now = func() time.Time { return bgpNow }
	code := Main(append([]string{"bgp", "--run-dir", runDir}, args...), &out, &errOut, opts)
	return code, out.String(), errOut.String()
}

func TestBGP(t *testing.T) {
	for name, tc := range map[string]struct {
		report *bgpstatus.Report
		args   []string
	}{
		"bgp.table":              {bgpReport(), nil},
		"bgp.json":               {bgpReport(), []string{"-o", "json"}},
		"bgp-not-speaking.table": {&bgpstatus.Report{Node: "c1", Domain: "cloud", Updated: bgpNow.Add(-time.Second)}, nil},
		"bgp-error.table": {&bgpstatus.Report{Node: "a1", Domain: "site-a", Speaking: true,
			RouterID: netip.MustParseAddr("172.31.0.11"), LocalASN: 64512, Updated: bgpNow,
			Error: "peer 172.31.0.1: reading the password from Secret edgeplane-system/site-a-bgp: secrets \"site-a-bgp\" not found"}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := bgpstatus.Write(dir, tc.report); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runBGP(t, dir, tc.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			checkGolden(t, name, out)
		})
	}
}

func TestBGPWithoutReport(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runBGP(t, dir)
	if code != 1 || out != "" || !strings.Contains(errOut, "no BGP report "+dir+"/bgp.json") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
