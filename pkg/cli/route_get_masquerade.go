package cli

import (
	"fmt"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
	"github.com/edgeplane/edgeplane/pkg/maps/nonmasq"
)

// masqueradeInfo is what node_egress does with a packet route get hands to the host stack.
type masqueradeInfo struct {
	Masqueraded bool   `json:"masqueraded"`
	Address     string `json:"address"` // the node IP, when masqueraded
	Reason      string `json:"reason"`
}

// masquerade mirrors nat_should_masquerade (bpf/lib/nat_snat.h), which node_egress applies to TCP,
// UDP and ICMP echo on the underlay NIC's egress.
func (e *env) masquerade(rm *routeMaps, cfg nodecfg.NodeCfg, src, dst netip.Addr) (*masqueradeInfo, error) {
	no := func(reason string) (*masqueradeInfo, error) { return &masqueradeInfo{Reason: reason}, nil }
	if cfg.Flags&nodecfg.FlagMasquerade == 0 {
		return no("masquerade is disabled (node_cfg_map flags)")
	}
	if src.IsValid() && !cfg.PodPrefix().Contains(src) {
		return no(fmt.Sprintf("source %s is outside this node's pod CIDR %s", src, cfg.PodPrefix()))
	}
	if cfg.ClusterPrefix().Contains(dst) {
		return no(fmt.Sprintf("destination is inside the cluster CIDR %s", cfg.ClusterPrefix()))
	}
	hit, err := rm.nonmasq.Match(dst)
	if err != nil {
		return nil, err
	}
	if hit {
		return no(fmt.Sprintf("destination matches %s in %s", longestMatch(rm.nonmasq, dst), nonmasq.MapName))
	}
	return &masqueradeInfo{Masqueraded: true, Address: cfg.NodeIP.String(),
		Reason: "outside the cluster and not in " + nonmasq.MapName}, nil
}

func masqueradeSentence(m *masqueradeInfo) string {
	if m.Masqueraded {
		return fmt.Sprintf("masqueraded to %s by node_egress (TCP, UDP, ICMP echo): %s", m.Address, m.Reason)
	}
	return "not masqueraded: " + m.Reason
}

// longestMatch names the nonmasq_map prefix the kernel's LPM lookup matched.
func longestMatch(m *nonmasq.Map, a netip.Addr) string {
	var best netip.Prefix
	_ = m.Iterate(func(p netip.Prefix) bool {
		if p.Contains(a) && (!best.IsValid() || p.Bits() > best.Bits()) {
			best = p
		}
		return true
	})
	if !best.IsValid() {
		return "a prefix"
	}
	return best.String()
}
