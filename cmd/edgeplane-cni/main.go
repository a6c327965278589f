// Command edgeplane-cni is the edgeplane CNI plugin; see pkg/cni.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/edgeplane/edgeplane/pkg/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions, "CNI plugin edgeplane")
}
