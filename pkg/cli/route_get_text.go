package cli

import (
	"fmt"
	"io"
)

func nexthopSentence(n nodeInfo) string {
	if n.NexthopValid {
		return n.NexthopMAC + " (resolved by the agent)"
	}
	return "not resolved: the kernel's FIB and neighbour table (bpf_redirect_neigh)"
}

func routeGetTable(w io.Writer, r *routeGetResult) {
	row(w, "destination", r.Destination)
	row(w, "from", orDash(r.Source))
	row(w, "verdict", verdictSentence(r))
	fmt.Fprintln(w)
	row(w, "STEP", "RESULT")
	for _, s := range r.Steps {
		row(w, s.Step, s.Result)
	}
}

func verdictSentence(r *routeGetResult) string {
	switch r.Verdict {
	case verdictDrop:
		if dc := r.DomainCheck; dc != nil && dc.Connectivity == connPublic {
			return fmt.Sprintf("drop %s (domain %s has public connectivity to this node's domain %s; the pod gets ICMP host unreachable)",
				r.DropReason, orID(dc.DomainName, dc.Domain), orID(dc.NodeDomainName, dc.NodeDomain))
		}
		return "drop " + r.DropReason
	case verdictLocal:
		to := ifCell(r.Redirect.Ifindex, r.Redirect.Interface)
		if pod := r.Endpoint.pod(); pod != "" {
			to = "pod " + pod + " on " + to
		}
		return "deliver-local: bpf_redirect_peer to " + to
	case verdictHost:
		if r.Masquerade.Masqueraded {
			return "host: to the host stack, masqueraded to " + r.Masquerade.Address
		}
		return "host: to the host stack, not masqueraded"
	}
	how := fmt.Sprintf("%s to %s", r.Redirect.Helper, ifCell(r.Redirect.Ifindex, r.Redirect.Interface))
	if r.Redirect.DstMAC != "" {
		how += ", next hop " + r.Redirect.DstMAC
	}
	if dc := r.DomainCheck; dc != nil && dc.Connectivity == connPrivate {
		how += "; crosses the private line to domain " + orID(dc.DomainName, dc.Domain)
	}
	return fmt.Sprintf("%s to node %s: %s", r.Verdict, nodePhrase(r.Route.NodeIP, r.Route.NodeName), how)
}

// podPhrase names a local endpoint in route get's steps: "local pod default/web-1", or "a local
// pod" when the name index does not know it.
func podPhrase(ep *endpointInfo) string {
	if pod := ep.pod(); pod != "" {
		return "local pod " + pod
	}
	return "a local pod"
}

// nodePhrase is a node's address followed by its name when the name index knows it.
func nodePhrase(ip, name string) string {
	if name == "" {
		return ip
	}
	return ip + " (" + name + ")"
}

// poolPhrase is "pool <name>, " for a route's step, or nothing.
func poolPhrase(pool string) string {
	if pool == "" {
		return ""
	}
	return "pool " + pool + ", "
}
