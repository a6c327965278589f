package cluster

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestFlowLines: the lost flow's packets are picked from tcpdump's text by port, outer or inner
// (a VXLAN packet's inner one is on a continuation line), within the window.
func TestFlowLines(t *testing.T) {
	dump := `1765000000.100000 IP 10.244.1.2.47366 > 10.102.213.189.8080: Flags [P.], seq 1:20, ack 1, win 502, length 19
1765000000.200000 IP 172.30.1.3.40000 > 172.30.0.3.8472: VXLAN, flags [I] (0x08), vni 1
IP 10.244.1.2.47366 > 10.244.0.5.8080: Flags [P.], seq 1:20, ack 1, win 502, length 19
1765000000.300000 IP 172.30.1.3.40001 > 172.30.0.3.8472: VXLAN, flags [I] (0x08), vni 1
IP 10.244.1.2.47367 > 10.244.0.5.8080: Flags [S], seq 5, win 64240, length 0
1765000009.000000 IP 10.244.0.5.8080 > 10.244.1.2.47366: Flags [P.], seq 1:20, ack 20, win 502, length 19
`
	base := time.Unix(1765000000, 0)
	got := flowLines(dump, 47366, base, base.Add(time.Second))
	want := []string{
		base.Add(100*time.Millisecond).Format("15:04:05.000000") + " IP 10.244.1.2.47366 > 10.102.213.189.8080: Flags [P.], seq 1:20, ack 1, win 502, length 19",
		base.Add(200*time.Millisecond).Format("15:04:05.000000") + " IP 172.30.1.3.40000 > 172.30.0.3.8472: VXLAN, flags [I] (0x08), vni 1 | IP 10.244.1.2.47366 > 10.244.0.5.8080: Flags [P.], seq 1:20, ack 1, win 502, length 19",
	}
	if !slices.Equal(got, want) {
		t.Errorf("flowLines:\n%q\nwant\n%q", got, want)
	}
}

// TestParseSSRetrans: `ss -Htni` lists a socket per unindented line and its details, where a
// socket that resent has retrans:<unacknowledged>/<total>, on the next.
func TestParseSSRetrans(t *testing.T) {
	const out = "0      0      10.244.1.5:8080 169.254.42.1:39356\n" +
		"\t bbr wscale:10,10 rto:200 rtt:0.044/0.022 cwnd:10 bytes_received:1 segs_out:1 segs_in:3\n" +
		"0      0      10.244.1.5:8080 10.244.3.4:40112\n" +
		"\t bbr wscale:10,10 rto:412 rtt:0.3/0.1 retrans:0/3 lost:0 cwnd:5 segs_out:9\n"
	for _, tc := range []struct {
		out            string
		total, sockets int
		wantErr        bool
	}{
		{out: out, total: 3, sockets: 2},
		{out: strings.SplitAfterN(out, "\n", 3)[0] + strings.SplitAfterN(out, "\n", 3)[1], total: 0, sockets: 1},
		{out: "", total: 0, sockets: 0},
		{out: "0 0 a:1 b:2\n\t retrans:0/x\n", wantErr: true},
	} {
		total, sockets, err := parseSSRetrans(tc.out)
		if (err != nil) != tc.wantErr || (err == nil && (int(total) != tc.total || sockets != tc.sockets)) {
			t.Errorf("%q: total %d, sockets %d, err %v; want %d, %d, error %v", tc.out, total, sockets, err, tc.total, tc.sockets, tc.wantErr)
		}
	}
}
