package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/edgeplane/edgeplane/pkg/cniconf"
	"github.com/edgeplane/edgeplane/pkg/cninode"
)

// defaultIPAM is what an omitted "ipam" means.
const defaultIPAM = "host-local"

// errPluginNotAvailable is the spec's well-known code for STATUS "plugin not available" (50).
const errPluginNotAvailable uint = 50

// NetConf is the plugin's network configuration (stdin).
type NetConf struct {
	types.PluginConf
	// RunDir is where the agent writes node.json.
	RunDir string `json:"runDir,omitempty"`
	// MTU overrides the pod MTU from node.json when set.
	MTU int `json:"mtu,omitempty"`

	// ipam is the raw ipam object, as delegated (with the node's pod CIDR filled in).
	ipam map[string]any
	// raw is the whole config, from which delegated configs are derived.
	raw map[string]any
}

// parseConf decodes and validates stdin. Errors are *types.Error with the code the spec asks for.
func parseConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, &conf.raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot parse the network configuration: "+err.Error(),
			"stdin must be a JSON object like {\"cniVersion\":\"1.1.0\",\"name\":\"edgeplane\",\"type\":\"edgeplane\"}")
	}
	if ipam, ok := conf.raw["ipam"]; ok {
		if _, isObject := ipam.(map[string]any); !isObject {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "ipam must be an object", `e.g. "ipam": {"type": "host-local"}`)
		}
	}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid network configuration: "+err.Error(), "")
	}
	switch {
	case conf.CNIVersion == "":
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "cniVersion is missing", `set "cniVersion" to one of 0.4.0, 1.0.0, 1.1.0`)
	case conf.Name == "":
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "name is missing", `set "name", e.g. "edgeplane"`)
	case conf.Type != cniconf.PluginType:
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("type is %q, not %q", conf.Type, cniconf.PluginType), "")
	case conf.MTU != 0 && (conf.MTU < 576 || conf.MTU > 65535):
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("mtu %d is out of range 576-65535", conf.MTU), "omit mtu to use the node's")
	}
	if _, _, _, err := version.ParseVersion(conf.CNIVersion); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("cniVersion %q: %v", conf.CNIVersion, err), "")
	}
	if conf.RunDir == "" {
		conf.RunDir = cninode.DefaultRunDir
	}
	switch v := conf.raw["ipam"].(type) {
	case nil:
		conf.ipam = map[string]any{"type": defaultIPAM}
	case map[string]any:
		conf.ipam = v
	default:
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ipam must be an object", `e.g. "ipam": {"type": "host-local"}`)
	}
	if t, _ := conf.ipam["type"].(string); t == "" {
		if _, ok := conf.ipam["type"]; ok {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, "ipam.type must be a non-empty string", `e.g. "ipam": {"type": "host-local"}`)
		}
		conf.ipam["type"] = defaultIPAM
	}
	conf.IPAM.Type = conf.ipam["type"].(string)
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot parse prevResult: "+err.Error(), "")
	}
	return conf, nil
}

// ipamConf is the config delegated to the IPAM plugin: ours, with an ipam section that allocates
// from the node's pod CIDR unless the operator gave ranges or a subnet.
func (c *NetConf) ipamConf(node *cninode.Config) ([]byte, error) {
	ipam := make(map[string]any, len(c.ipam)+1)
	for k, v := range c.ipam {
		ipam[k] = v
	}
	if node != nil && c.IPAM.Type == defaultIPAM {
		if _, hasRanges := ipam["ranges"]; !hasRanges {
			if _, hasSubnet := ipam["subnet"]; !hasSubnet {
				ipam["ranges"] = []any{[]any{map[string]any{"subnet": node.PodCIDR.String()}}}
			}
		}
	}
	out := make(map[string]any, len(c.raw))
	for k, v := range c.raw {
		out[k] = v
	}
	out["ipam"] = ipam
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encoding ipam config: %w", err)
	}
	return b, nil
}

// readNode reads node.json, turning "not there yet" into the spec's try-again-later error.
func readNode(runDir string) (*cninode.Config, error) {
	node, err := cninode.Read(runDir)
	if err == nil {
		return node, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("the edgeplane agent has not written %s yet", cninode.Path(runDir)),
			"wait for the edgeplane-agent pod on this node to become ready")
	}
	return nil, types.NewError(types.ErrTryAgainLater, err.Error(), "the edgeplane agent wrote an invalid node config; check its logs")
}

// podMTU is the configured override or the node's.
func (c *NetConf) podMTU(node *cninode.Config) int {
	if c.MTU != 0 {
		return c.MTU
	}
	return node.MTU
}
