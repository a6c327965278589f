#!/usr/bin/env bash
# Installs the reference CNI plugins edgeplane chains with (host-local IPAM, portmap, bandwidth,
# loopback) from containernetworking/plugins, built from the Go module and cached by version.
# Prints the directory that holds them.
set -euo pipefail
VERSION=${CNI_PLUGINS_VERSION:-v1.9.1}
CACHE=${EDGEPLANE_CACHE:-/var/cache/edgeplane}
BIN=$CACHE/cni-plugins-$VERSION
mkdir -p "$BIN"
for p in ipam/host-local meta/portmap meta/bandwidth main/loopback; do
	name=${p#*/}
	[ -x "$BIN/$name" ] && continue
	echo "install-cni-plugins: building $name $VERSION" >&2
	GOBIN=$BIN GOFLAGS= CGO_ENABLED=0 GOTOOLCHAIN=local go install "github.com/containernetworking/plugins/plugins/$p@$VERSION"
done
echo "$BIN"
