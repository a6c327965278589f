package cni

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ipam"

	"github.com/edgeplane/edgeplane/pkg/cninode"
	"github.com/edgeplane/edgeplane/pkg/datapath"
	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
)

// cmdStatus reports whether ADD can succeed now: node.json is there and valid, the agent has
// pinned the pod program and the endpoint map, and the IPAM plugin (other than host-local, which
// has no STATUS) is ready.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	node, err := cninode.Read(conf.RunDir)
	if err != nil {
		return types.NewError(errPluginNotAvailable, "edgeplane is not ready: "+err.Error(), "wait for the edgeplane agent on this node")
	}
	for _, pin := range []string{filepath.Join(node.BPFFSRoot, datapath.PodProgram), maps.PinPath(node.BPFFSRoot, endpoints.MapName)} {
		if _, err := os.Stat(pin); err != nil {
			return types.NewError(errPluginNotAvailable, fmt.Sprintf("edgeplane is not ready: the datapath has not pinned %s", pin),
				"wait for the edgeplane agent on this node")
		}
	}
	if conf.IPAM.Type != defaultIPAM {
		ipamConf, err := conf.ipamConf(node)
		if err != nil {
			return err
		}
		if err := ipam.ExecStatus(conf.IPAM.Type, ipamConf); err != nil {
			return fmt.Errorf("ipam %s: %w", conf.IPAM.Type, err)
		}
	}
	return nil
}
