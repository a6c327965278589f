// Package cniconf names what edgeplane puts in a node's CNI directories: the plugin binary, under
// the "type" the conflist gives it, and the conflist itself. The installer writes them
// (pkg/install), the container runtime runs the plugin by that name (pkg/cni checks it), and the
// agent's uninstall removes them (pkg/agent). It imports nothing, so none of the three links
// another's code: edgeplane-install stays free of the datapath the plugin needs.
package cniconf

const (
	// PluginType is the conflist's "type" for edgeplane, and so the plugin's file name in the CNI
	// bin directory.
	PluginType = "edgeplane"
	// ConflistName is the conflist's default file name in the CNI conf directory; it sorts first so
	// the runtime picks it.
	ConflistName = "10-edgeplane.conflist"
)
