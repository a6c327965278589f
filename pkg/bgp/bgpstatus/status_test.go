package bgpstatus

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// TestJSONRoundTrip keeps the schema edgeplanectl reads: every field survives, addresses and
// prefixes are written as text, and unknown router IDs and times are left out.
func TestJSONRoundTrip(t *testing.T) {
	since := time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)
	in := []PeerStatus{{
		Address: netip.MustParseAddr("192.0.2.254"), ASN: 65000, LocalASN: 65001, State: StateEstablished,
		RouterID: netip.MustParseAddr("192.0.2.254"), Since: since, HoldTimeSeconds: 90,
		Advertised: 2, Received: 1, GracefulRestart: true,
		ReceivedRoutes: []Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: netip.MustParseAddr("192.0.2.254"), ASPath: []uint32{65000}, Stale: true}},
	}, {
		Address: netip.MustParseAddr("192.0.2.253"), ASN: 65000, LocalASN: 65001, State: StateActive,
		LastError: "DISCONNECT_REASON_HOLD_TIMER_EXPIRED",
	}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"address":"192.0.2.254","asn":65000,"localASN":65001,"state":"established","routerID":"192.0.2.254",` +
		`"since":"2026-12-06T06:00:00Z","holdTimeSeconds":90,"advertised":2,"received":1,"gracefulRestart":true,` +
		`"receivedRoutes":[{"prefix":"0.0.0.0/0","nextHop":"192.0.2.254","asPath":[65000],"stale":true}]},` +
		`{"address":"192.0.2.253","asn":65000,"localASN":65001,"state":"active","advertised":0,"received":0,` +
		`"gracefulRestart":false,"lastError":"DISCONNECT_REASON_HOLD_TIMER_EXPIRED"}]`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	var out []PeerStatus
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip\n got %+v\nwant %+v", out, in)
	}
	if up := in[0].Uptime(since.Add(time.Minute)); up != time.Minute {
		t.Errorf("uptime %v, want 1m", up)
	}
	if up := in[1].Uptime(since); up != 0 {
		t.Errorf("uptime of a session that is not established: %v", up)
	}
}
