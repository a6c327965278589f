package cluster

import (
	"slices"
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
