package lab

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Hop is who answered an echo request sent with a limited TTL: the destination's echo reply
// (Reached), or a router's ICMP "time exceeded" quoting the request.
type Hop struct {
	From    netip.Addr
	Reached bool
}

// ProbeTTL sends one ICMP echo request from ns to dst with the IPv4 TTL ttl and waits for the
// echo reply or the "time exceeded" about it, as one round of traceroute -I does.
func ProbeTTL(ns Netns, dst netip.Addr, ttl int, timeout time.Duration) (Hop, error) {
	a, err := echoProbe(ns, dst, ttl, "edgeplane-lab-ttl", timeout, ipv4.ICMPTypeTimeExceeded)
	if err != nil {
		return Hop{}, fmt.Errorf("probe %s from %s with TTL %d: %w", dst, ns, ttl, err)
	}
	return Hop{From: a.from, Reached: a.typ == ipv4.ICMPTypeEchoReply}, nil
}

// echoAnswer is what answered an echo request: dst's echo reply, or an ICMP error (typ, code)
// from a hop on the way, quoting the request.
type echoAnswer struct {
	from netip.Addr
	typ  ipv4.ICMPType
	code int
	rtt  time.Duration
}

// echoProbe sends one ICMP echo request (payload data) from ns to dst, with the IPv4 TTL ttl when
// it is not 0, and waits for its echo reply or for an ICMP error of one of errTypes quoting it;
// everything else is ignored until timeout.
func echoProbe(ns Netns, dst netip.Addr, ttl int, data string, timeout time.Duration, errTypes ...ipv4.ICMPType) (echoAnswer, error) {
	conn, err := openIn(ns, func() (*icmp.PacketConn, error) { return icmp.ListenPacket("ip4:icmp", "0.0.0.0") })
	if err != nil {
		return echoAnswer{}, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	defer conn.Close()
	if ttl != 0 {
		if err := conn.IPv4PacketConn().SetTTL(ttl); err != nil {
			return echoAnswer{}, fmt.Errorf("setting TTL %d: %w", ttl, err)
		}
	}
	id := int(pingID.Add(1) & 0xffff)
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte(data)}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return echoAnswer{}, err
	}
	start := time.Now()
	if _, err := conn.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return echoAnswer{}, fmt.Errorf("echo request to %s from %s: %w", dst, ns, err)
	}
	_ = conn.SetReadDeadline(start.Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return echoAnswer{}, fmt.Errorf("no answer within %v", timeout)
		}
		sender, _ := netip.ParseAddr(from.String())
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil {
			continue
		}
		a := echoAnswer{from: sender, code: m.Code, rtt: time.Since(start)}
		switch body := m.Body.(type) {
		case *icmp.Echo:
			if m.Type == ipv4.ICMPTypeEchoReply && body.ID == id && sender == dst {
				a.typ = ipv4.ICMPTypeEchoReply
				return a, nil
			}
		case *icmp.TimeExceeded:
			if slices.Contains(errTypes, ipv4.ICMPTypeTimeExceeded) && quotesEcho(body.Data, dst, id) {
				a.typ = ipv4.ICMPTypeTimeExceeded
				return a, nil
			}
		case *icmp.DstUnreach:
			if slices.Contains(errTypes, ipv4.ICMPTypeDestinationUnreachable) && quotesEcho(body.Data, dst, id) {
				a.typ = ipv4.ICMPTypeDestinationUnreachable
				return a, nil
			}
		}
	}
}

// Traceroute probes dst from ns with TTL 1, 2, ... up to maxHops and returns who answered each,
// the destination last; an error when a probe got no answer or dst was not reached.
func Traceroute(ns Netns, dst netip.Addr, maxHops int, timeout time.Duration) ([]netip.Addr, error) {
	var hops []netip.Addr
	for ttl := 1; ttl <= maxHops; ttl++ {
		h, err := ProbeTTL(ns, dst, ttl, timeout)
		if err != nil {
			return hops, err
		}
		hops = append(hops, h.From)
		if h.Reached {
			return hops, nil
		}
	}
	return hops, fmt.Errorf("traceroute %s from %s: not reached in %d hops (%v)", dst, ns, maxHops, hops)
}
