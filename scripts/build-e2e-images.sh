#!/usr/bin/env bash
# Builds, offline from Go modules and Debian packages, the container images e2e.test pulls for the
# [sig-network] specs, under the exact references it pulls (test/utils/image/manifest.go), plus
# CoreDNS's image for the lab cluster. No Docker, no registry: the images are docker-archive
# tarballs written by internal/ociimage (tests/conformance/images), which the lab imports into
# every node's containerd.
#   scripts/build-e2e-images.sh [--rootfs]
# Prints the tarball paths on stdout, one a line; progress and phase times go to stderr. With
# --rootfs it only prepares the Debian root file systems (the network-bound part), so a caller can
# run it beside the Go builds.
#
# The userlands come from Debian bookworm .debs, resolved and downloaded with a scratch apt
# configuration under the cache (its own sources, lists, archives and an empty dpkg status: the
# machine's apt state is never read or written) and unpacked with `dpkg-deb -x`; no maintainer
# script runs. Everything is cached: the root file systems by package list, the tarballs by the
# hash of every input (binaries, package files, builder source).
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-v1.37.2}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${EDGEPLANE_CACHE:-/var/cache/edgeplane}
GO=${GO:-go}

# The userland of each image. agnhost's (also glibc-dns-testing's) carries what the specs run in
# it: a shell, coreutils, dig, getent, hostname, curl, wget, nc, ss/ip, socat, awk, ping. (procps would
# pull in perl, util-linux systemd's library: no [sig-network] spec runs ps or ipcs.)
declare -A debs=(
	[userland]="bash dash coreutils libc-bin bind9-dnsutils hostname mawk grep sed findutils curl netcat-openbsd iproute2 socat iputils-ping tar gzip debianutils wget"
	[busybox]="busybox-static"
	[iptables]="dash coreutils grep debianutils conntrack iptables"
	[nginx]="nginx-light"
)

apt_dir=$CACHE/debian-$DEBIAN_SUITE-apt
apt_opts=(
	-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=$apt_dir/empty"
	-o "Dir::Etc::preferences=$apt_dir/empty/preferences" -o "Dir::Etc::preferencesparts=$apt_dir/empty"
	-o "Dir::State=$apt_dir/state" -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
	-o "Dir::Cache=$apt_dir/cache" -o "Debug::NoLocking=1"
	-o "APT::Architecture=amd64" -o "APT::Architectures=amd64" -o "APT::Install-Recommends=false"
)

apt_update() {
	mkdir -p "$apt_dir"/{empty,state,lists/partial,cache/archives/partial}
	: >"$apt_dir/status"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $DEBIAN_SUITE main" >"$apt_dir/sources.list"
	if [ ! -f "$apt_dir/lists/.updated" ]; then
		apt-get "${apt_opts[@]}" -qq update >&2
		touch "$apt_dir/lists/.updated"
	fi
}

# rootfs NAME: the directory holding the unpacked packages of debs[NAME], made once per list.
rootfs() {
	local name=$1 key dir
	key=$(echo "$DEBIAN_SUITE ${debs[$name]}" | sha256sum | cut -c1-12)
	dir=$CACHE/debian-$DEBIAN_SUITE-rootfs/$name-$key
	if [ ! -f "$dir.done" ]; then
		rm -rf "$dir" && mkdir -p "$dir"
		# With an empty dpkg status apt resolves the whole dependency closure. --print-uris lists
		# only what is not in the archive cache yet, so it runs on an empty scratch archive.
		local archives
		archives=$(mktemp -d "$apt_dir/cache/list.XXXXXX")
		mkdir -p "$archives/partial"
		# shellcheck disable=SC2086
		apt-get "${apt_opts[@]}" -o "Dir::Cache::archives=$archives" -qq -y --print-uris install ${debs[$name]} |
			awk '{print $2}' | sort >"$dir.debs"
		rm -rf "$archives"
		[ -s "$dir.debs" ] || { echo "build-e2e-images: apt resolved no package for $name" >&2; return 1; }
		# shellcheck disable=SC2086
		apt-get "${apt_opts[@]}" -qq -y --download-only install ${debs[$name]} >&2
		while read -r f; do
			dpkg-deb -x "$apt_dir/cache/archives/$f" "$dir"
		done <"$dir.debs"
		# Documentation is no part of an image (as in Debian's slim images).
		rm -rf "$dir"/usr/share/{doc,man,info,locale,lintian,bug}
		touch "$dir.done"
	fi
	echo "$dir"
}

phase() { echo "build-e2e-images: $1 in $(($SECONDS - $2))s" >&2; }

prepare_rootfs() {
	local start=$SECONDS
	apt_update
	for n in "${!debs[@]}"; do rootfs "$n" >/dev/null; done
	phase "Debian root file systems ready" $start
}

if [ "${1:-}" = --rootfs ]; then
	prepare_rootfs
	exit 0
fi

start=$SECONDS
k8s_bin_out=$(mktemp) coredns_out=$(mktemp)
trap 'rm -f "$k8s_bin_out" "$coredns_out"' EXIT
scripts/build-k8s.sh agnhost regression-issue-74839 >"$k8s_bin_out" & k8s_pid=$!
scripts/build-coredns.sh >"$coredns_out" & coredns_pid=$!
prepare_rootfs & rootfs_pid=$!
failed=0
for p in $k8s_pid $coredns_pid $rootfs_pid; do wait "$p" || failed=1; done
[ $failed = 0 ] || { echo "build-e2e-images: a build failed" >&2; exit 1; }
phase "inputs ready" $start

# The lab's pause program serves as e2e's pause image too.
pause=$CACHE/e2e-images-pause/pause
mkdir -p "${pause%/*}"
CGO_ENABLED=0 $GO build -trimpath -ldflags='-s -w' -o "$pause" ./tests/kubelet/pause
args=(-cache "$CACHE" -k8s-version "$K8S_VERSION" -k8s-bin "$(cat "$k8s_bin_out")" -coredns "$(cat "$coredns_out")/coredns"
	-pause "$pause" -k8s-src "$(cd "$CACHE/k8s-$K8S_VERSION-src" && GOFLAGS=-mod=mod $GO list -m -f '{{.Dir}}' k8s.io/kubernetes)")
for n in "${!debs[@]}"; do args+=(-rootfs "$n=$(rootfs "$n")"); done
start=$SECONDS
$GO run ./tests/conformance/cmd/e2e-images "${args[@]}"
phase "images ready" $start
