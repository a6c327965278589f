package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/datapath/dropreason"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
	"github.com/edgeplane/edgeplane/tests/lab"
)

// How BenchmarkServices checks, before its rounds, that each injected path does what it claims:
// counters of node_xdp or node_ingress, of the UDP layer and of kube-proxy's DROP rule.

func nicMAC(b *testing.B, n *lab.Node) net.HardwareAddr {
	var mac net.HardwareAddr
	if err := lab.InNetns(n.Netns, func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err == nil {
			mac = ifc.HardwareAddr
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return mac
}

const verifyFrames = 20000

// calibrate runs verifyFrames through p and sets p.frames to about one second's worth.
func calibrate(b *testing.B, p *livePath) {
	s, err := LiveRate(p.node.Netns, "eth0", p.prog, p.frame, verifyFrames, benchCPU)
	if err != nil {
		b.Fatalf("%s: %v", p.name, err)
	}
	p.frames = uint32(min(max(s.PPS, 50_000), 20_000_000))
}

// verifyDrop: the program counting under dir (node_xdp or node_ingress) counted every frame as
// NODEPORT_CLOSED.
func verifyDrop(dir metricsmap.Dir, program string) func(*testing.B, *livePath) {
	return func(b *testing.B, p *livePath) {
		key := metricsmap.Key{Dir: dir, Reason: uint32(dropreason.NodePortClosed)}
		before, err := p.node.Counters()
		if err != nil {
			b.Fatal(err)
		}
		calibrate(b, p)
		after, err := p.node.Counters()
		if err != nil {
			b.Fatal(err)
		}
		if got := after[key].Packets - before[key].Packets; got != verifyFrames {
			b.Fatalf("%s: %s counted %d NODEPORT_CLOSED drops of %d frames", p.name, program, got, verifyFrames)
		}
	}
}

// verifyNoPort: the frames reached ns's UDP layer, which had no socket for them (the node itself
// for a hidden NodePort, the backend pod for a forwarded one): Udp NoPorts grew by the frames,
// give or take what a full backlog dropped (at most 1%).
func verifyNoPort(ns lab.Netns) func(*testing.B, *livePath) {
	return func(b *testing.B, p *livePath) {
		before := udpNoPorts(b, ns)
		calibrate(b, p)
		got := udpNoPorts(b, ns) - before
		if got < verifyFrames*99/100 || got > verifyFrames {
			b.Fatalf("%s: %s counted %d UDP datagrams to no port of %d frames", p.name, ns, got, verifyFrames)
		}
	}
}

var noPortsField = regexp.MustCompile(`(?m)^Udp: (\d+) (\d+)`)

func udpNoPorts(b *testing.B, ns lab.Netns) uint64 {
	var v uint64
	err := lab.InNetns(ns, func() error {
		// thread-self: /proc/net follows the process's main thread, not this one.
		buf, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		// "Udp: InDatagrams NoPorts ..." header line, then the values line.
		all := noPortsField.FindAllStringSubmatch(string(buf), -1)
		if len(all) == 0 {
			return fmt.Errorf("no Udp line in snmp of %s", ns)
		}
		v, err = strconv.ParseUint(all[len(all)-1][2], 10, 64)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// verifyRuleDrop: kube-proxy's DROP rule for the NodePort counted every frame.
func verifyRuleDrop(k *lab.KubeProxy, nodePort int32) func(*testing.B, *livePath) {
	return func(b *testing.B, p *livePath) {
		before := dropRulePackets(b, k, nodePort)
		calibrate(b, p)
		if got := dropRulePackets(b, k, nodePort) - before; got != verifyFrames {
			b.Fatalf("%s: kube-proxy's DROP rule for port %d counted %d of %d frames", p.name, nodePort, got, verifyFrames)
		}
	}
}

func dropRulePackets(b *testing.B, k *lab.KubeProxy, nodePort int32) uint64 {
	out, err := k.Node.Netns.Exec(context.Background(), "iptables-save", "-c", "-t", "filter")
	if err != nil {
		b.Fatal(err)
	}
	port := fmt.Sprintf("--dport %d ", nodePort)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, port) && strings.HasSuffix(strings.TrimSpace(line), "-j DROP") && strings.HasPrefix(line, "[") {
			n, err := strconv.ParseUint(line[1:strings.Index(line, ":")], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("kube-proxy has no DROP rule for node port %d:\n%s", nodePort, out)
	return 0
}
