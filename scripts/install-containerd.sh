#!/usr/bin/env bash
# Installs containerd and runc (Debian packages) and builds the lab's pause image locally: a static
# Go program (tests/kubelet/pause) at /pause, packaged as a docker-archive tarball by
# internal/ociimage/cmd/mkimage (the same builder as `make image`).
# Idempotent. Prints the image tarball path; the lab imports it into each private containerd with
#   ctr -a <sock> -n k8s.io images import <tarball>
# The image reference is localhost/edgeplane/pause:lab.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	}
fi
# The lab never uses a host containerd service: it runs private instances (tests/lab/kubelet.go).

GO=${GO:-go}
cache=/var/cache/edgeplane/pause-image
mkdir -p "$cache"
arch=$($GO env GOARCH)
src_sum=$(cat tests/kubelet/pause/main.go $(ls internal/ociimage/*.go | grep -v _test.go) internal/ociimage/cmd/mkimage/main.go \
	<(grep go-containerregistry go.sum) <(echo "$arch") | sha256sum | cut -c1-12)
out="$cache/pause-$src_sum.tar"
if [ ! -s "$out" ]; then
	rootfs="$cache/rootfs-$src_sum"
	rm -rf "$rootfs" && mkdir -p "$rootfs"
	CGO_ENABLED=0 $GO build -trimpath -ldflags='-s -w' -o "$rootfs/pause" ./tests/kubelet/pause
	$GO run ./internal/ociimage/cmd/mkimage -ref localhost/edgeplane/pause:lab -platform "linux/$arch=$rootfs" \
		-entrypoint '["/pause"]' -user 65535:65535 -out "$out" >/dev/null
	rm -rf "$rootfs"
fi
echo "$out"
