// Command edgeplane-cni is the edgeplane CNI plugin; see pkg/cni.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/edgeplane/edgeplane/pkg/cni"
)

// version is set at link time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions, "CNI plugin edgeplane "+version)
}
