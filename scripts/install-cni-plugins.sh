#!/usr/bin/env bash
# Installs the reference CNI plugins edgeplane chains with (host-local IPAM, portmap, bandwidth,
# loopback) from containernetworking/plugins, built from the Go module and cached by version, plus
# what a Flannel node of the interop lab (tests/interop) runs: bridge, and Flannel's CNI plugin
# "flannel" (reads flanneld's subnet.env, delegates to bridge + host-local). Flannel's plugin lives
# on in github.com/flannel-io/cni-plugin, which the module proxy does not serve; it is built from
# its last release inside containernetworking/plugins (plugins/meta/flannel, v0.9.1), the code that
# repository grew from.
# Prints the directory that holds them.
set -euo pipefail
VERSION=${CNI_PLUGINS_VERSION:-v1.9.1}
FLANNEL_CNI_VERSION=${FLANNEL_CNI_VERSION:-v0.9.1}
CACHE=${EDGEPLANE_CACHE:-/var/cache/edgeplane}
BIN=$CACHE/cni-plugins-$VERSION
mkdir -p "$BIN"
build_plugin() { # build_plugin <path under plugins/> <version>
	local name=${1#*/}
	[ -x "$BIN/$name" ] && return 0
	echo "install-cni-plugins: building $name $2" >&2
	GOBIN=$BIN GOFLAGS= CGO_ENABLED=0 GOTOOLCHAIN=local go install "github.com/containernetworking/plugins/plugins/$1@$2"
}
for p in ipam/host-local meta/portmap meta/bandwidth main/loopback main/bridge; do
	build_plugin "$p" "$VERSION"
done
build_plugin meta/flannel "$FLANNEL_CNI_VERSION"
echo "$BIN"
