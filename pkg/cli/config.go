package cli

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/spf13/cobra"

	"github.com/edgeplane/edgeplane/pkg/agentinfo"
	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/nodecfg"
)

// configInfo is the config verb's output (JSON schema in docs/cli.md).
type configInfo struct {
	Datapath  datapathConfig `json:"datapath"`
	NodeJSON  nodeJSONInfo   `json:"nodeJSON"`
	AgentJSON agentJSONInfo  `json:"agentJSON"`
}

// agentJSONInfo is the agent's <run-dir>/agent.json: its effective flags and the kernel's
// features as the datapath's probes found them (pkg/agentinfo).
type agentJSONInfo struct {
	Path    string            `json:"path"`
	Present bool              `json:"present"`
	Error   string            `json:"error"` // why it could not be read, when present but invalid
	Report  *agentinfo.Report `json:"report"`
}

// datapathConfig is node_cfg_map decoded.
type datapathConfig struct {
	Ready             bool     `json:"ready"` // false: the pod programs drop everything as NOT_READY
	NodeIP            string   `json:"nodeIP"`
	PodCIDR           string   `json:"podCIDR"`
	ClusterCIDR       string   `json:"clusterCIDR"`
	UnderlayIfindex   uint32   `json:"underlayIfindex"`
	UnderlayInterface string   `json:"underlayInterface"`
	UnderlayMAC       string   `json:"underlayMAC"`
	VxlanIfindex      uint32   `json:"vxlanIfindex"`
	VxlanInterface    string   `json:"vxlanInterface"`
	MTU               uint16   `json:"mtu"`
	VNI               uint32   `json:"vni"`
	VtepMAC           string   `json:"vtepMAC"`
	EncapMode         string   `json:"encapMode"`  // "native", "device" or "mode(<n>)"
	Flags             []string `json:"flags"`      // "ready", "masquerade", "gateway"
	Domain            uint32   `json:"domain"`     // this node's network domain ID
	DomainName        string   `json:"domainName"` // its name in domains_map; "" when unknown
	GatewayIP         string   `json:"gatewayIP"`  // its domain's cloud gateway when another node; "" when none
}

// nodeJSONInfo is the agent's <run-dir>/node.json, the agent <-> CNI contract.
type nodeJSONInfo struct {
	Path    string          `json:"path"`
	Present bool            `json:"present"`
	Error   string          `json:"error"` // why it could not be read, when present but invalid
	Config  *cninode.Config `json:"config"`
}

func newConfigCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Show the datapath configuration (node_cfg_map), the agent's node.json, and its flags and the kernel's features (agent.json)",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := e.readNodeCfg()
			if err != nil {
				return err
			}
			names, err := e.readDomainNames()
			if err != nil {
				return err
			}
			info := configInfo{Datapath: e.datapathConfig(cfg, names), NodeJSON: e.readNodeJSON(), AgentJSON: e.readAgentJSON()}
			return e.print(info, func(w io.Writer) { configTable(w, info) })
		},
	}
}

func configTable(w io.Writer, info configInfo) {
	d := info.Datapath
	row(w, "node_cfg_map")
	if !d.Ready {
		row(w, "  state", "NOT READY: the agent has not programmed the datapath; pods' packets are dropped (NOT_READY)")
	}
	row(w, "  node IP", d.NodeIP)
	row(w, "  pod CIDR", d.PodCIDR)
	row(w, "  cluster CIDR", d.ClusterCIDR)
	row(w, "  underlay", ifCell(d.UnderlayIfindex, d.UnderlayInterface)+" mac "+d.UnderlayMAC)
	row(w, "  vxlan device", ifCell(d.VxlanIfindex, d.VxlanInterface))
	row(w, "  encap mode", d.EncapMode)
	row(w, "  VNI", d.VNI)
	row(w, "  VTEP MAC", d.VtepMAC)
	row(w, "  pod MTU", d.MTU)
	row(w, "  domain", domainCell(d.DomainName, d.Domain))
	row(w, "  gateway IP", orDash(d.GatewayIP))
	row(w, "  flags", orDash(strings.Join(d.Flags, ",")))
	n := info.NodeJSON
	row(w, "node.json", n.Path)
	switch {
	case !n.Present:
		row(w, "  state", "absent: the agent has not written it (CNI STATUS fails until it does)")
	case n.Config == nil:
		row(w, "  state", "invalid: "+n.Error)
	default:
		c := n.Config
		row(w, "  node name", c.NodeName)
		row(w, "  node IP", c.NodeIP)
		row(w, "  pod CIDR", c.PodCIDR)
		row(w, "  cluster CIDR", c.ClusterCIDR)
		row(w, "  pod MTU", c.MTU)
		row(w, "  bpffs root", c.BPFFSRoot)
	}
	agentTable(w, info.AgentJSON)
}

// agentTable shows agent.json: the kernel's features first (what each missing one costs), then
// every flag with its effective value, sorted by name.
func agentTable(w io.Writer, a agentJSONInfo) {
	row(w, "agent.json", a.Path)
	switch {
	case !a.Present:
		row(w, "  state", "absent: no agent has loaded the datapath on this node since it was installed")
		return
	case a.Report == nil:
		row(w, "  state", "invalid: "+a.Error)
		return
	}
	r := a.Report
	row(w, "  node", r.Node)
	row(w, "  version", orDash(r.Version))
	row(w, "  started", r.Started.UTC().Format(time.RFC3339))
	row(w, "kernel", orDash(r.Kernel.Release))
	for _, f := range r.Kernel.Features {
		if f.Available {
			row(w, "  "+f.Name, "yes: "+f.Uses)
		} else {
			row(w, "  "+f.Name, "no (Linux "+f.Since+"): "+f.Without)
		}
	}
	row(w, "flags")
	names := make([]string, 0, len(r.Flags))
	for name := range r.Flags {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		row(w, "  --"+name, orDash(r.Flags[name]))
	}
}

func (e *env) readAgentJSON() agentJSONInfo {
	info := agentJSONInfo{Path: agentinfo.Path(e.runDir)}
	r, err := agentinfo.Read(e.runDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		info.Present, info.Error = true, err.Error()
	default:
		info.Present, info.Report = true, r
	}
	return info
}

// ifCell shows an interface as "name (ifindex N)", or flags an index that names nothing here.
func ifCell(ifindex uint32, name string) string {
	if name == "" {
		return fmt.Sprintf("ifindex %d (no such interface in this netns)", ifindex)
	}
	return fmt.Sprintf("%s (ifindex %d)", name, ifindex)
}

func (e *env) datapathConfig(c nodecfg.NodeCfg, names *domainNames) datapathConfig {
	var gateway string
	if c.GatewayIP != (maps.IPv4{}) {
		gateway = c.GatewayIP.String()
	}
	return datapathConfig{
		Ready:  c.Flags&nodecfg.FlagReady != 0,
		NodeIP: c.NodeIP.String(), PodCIDR: prefixString(c.PodPrefix(), c.PodCIDR, c.PodMask),
		ClusterCIDR:     prefixString(c.ClusterPrefix(), c.ClusterCIDR, c.ClusterMask),
		UnderlayIfindex: c.UnderlayIfindex, UnderlayInterface: e.ifNames.name(c.UnderlayIfindex),
		UnderlayMAC:  maps.MAC(c.UnderlayMAC),
		VxlanIfindex: c.VxlanIfindex, VxlanInterface: e.ifNames.name(c.VxlanIfindex),
		MTU: c.MTU, VNI: c.VNI, VtepMAC: maps.MAC(c.VtepMAC), EncapMode: encapModeName(c.EncapMode),
		Flags: cfgFlags(c.Flags), Domain: c.Domain, DomainName: names.name(c.Domain), GatewayIP: gateway,
	}
}

// prefixString shows a non-contiguous mask (never written by the agent) as address/mask.
func prefixString(p netip.Prefix, addr, mask maps.IPv4) string {
	if p.IsValid() {
		return p.String()
	}
	return addr.String() + "/" + mask.String()
}

func encapModeName(mode uint8) string {
	switch mode {
	case nodecfg.EncapNative:
		return "native"
	case nodecfg.EncapDevice:
		return "device"
	}
	return fmt.Sprintf("mode(%d)", mode)
}

func cfgFlags(f uint16) []string {
	out := []string{}
	if f&nodecfg.FlagReady != 0 {
		out = append(out, "ready")
	}
	if f&nodecfg.FlagMasquerade != 0 {
		out = append(out, "masquerade")
	}
	if f&nodecfg.FlagGateway != 0 {
		out = append(out, "gateway")
	}
	if rest := f &^ (nodecfg.FlagReady | nodecfg.FlagMasquerade | nodecfg.FlagGateway); rest != 0 {
		out = append(out, fmt.Sprintf("%#x", rest))
	}
	return out
}

func (e *env) readNodeJSON() nodeJSONInfo {
	info := nodeJSONInfo{Path: cninode.Path(e.runDir)}
	c, err := cninode.Read(e.runDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		info.Present, info.Error = true, err.Error()
	default:
		info.Present, info.Config = true, c
	}
	return info
}

// localNodeIP is this node's underlay address: node_cfg_map's once the agent has written it,
// else node.json's; invalid when neither says.
func (e *env) localNodeIP() netip.Addr {
	if c, err := e.readNodeCfg(); err == nil && c.Flags&nodecfg.FlagReady != 0 {
		return c.NodeIP.Addr()
	}
	if c, err := cninode.Read(e.runDir); err == nil {
		return c.NodeIP
	}
	return netip.Addr{}
}

// readNodeCfg reads node_cfg_map's one entry. Its fields are only ever appended, so an entry
// pinned by an agent of another version is read by its common prefix: an older agent's lacks the
// newer fields (left zero: the default domain, no cloud gateway), a newer agent's has more that
// this edgeplanectl does not know. Without that, every verb reading it would fail on either side
// of an upgrade until both are updated.
func (e *env) readNodeCfg() (nodecfg.NodeCfg, error) {
	var c nodecfg.NodeCfg
	m, err := open(e, nodecfg.MapName, func(root string) (*ebpf.Map, error) {
		return maps.OpenPinnedReadOnly(root, nodecfg.MapName)
	})
	if err != nil {
		return c, err
	}
	defer m.Close()
	value := make([]byte, m.ValueSize())
	if err := m.Lookup(uint32(0), value); err != nil {
		return c, fmt.Errorf("looking up %s[0]: %w", nodecfg.MapName, err)
	}
	full := make([]byte, binary.Size(c))
	copy(full, value)
	if err := binary.Read(bytes.NewReader(full), binary.NativeEndian, &c); err != nil {
		return c, fmt.Errorf("decoding %s[0]: %w", nodecfg.MapName, err)
	}
	return c, nil
}
