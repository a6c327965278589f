#!/usr/bin/env bash
# Builds edgeplane's image with Go alone (no Docker, no registry), for linux/amd64 and linux/arm64:
#   /usr/local/bin/{edgeplane-agent,edgeplane-bgp,edgeplane-cni,edgeplane-install,edgeplanectl}  (stamped VERSION)
#   /usr/local/lib/edgeplane/cni-plugins/{host-local,portmap,bandwidth,loopback}  (containernetworking/plugins
#       at the version go.mod pins, built from that module with its own go.sum, as upstream does)
#   /etc/ssl/certs/ca-certificates.crt  (the NSS roots of golang.org/x/crypto/x509roots/fallback,
#       pinned by go.mod; internal/ociimage/cmd/cabundle)
#   /etc/passwd, /etc/group (root, nobody), /tmp (1777)
# ENTRYPOINT /usr/local/bin/edgeplane-agent, runs as root: the same files and paths as the Dockerfile.
# Everything is static (CGO_ENABLED=0, -trimpath); the Go build cache makes a second run fast, and
# internal/ociimage makes the tarballs byte-identical for the same commit and toolchain.
#
# Writes, and prints the paths of:
#   bin/image/edgeplane-<version>.tar         OCI archive, both platforms, <repo>:<version>
#   bin/image/edgeplane-<version>-<arch>.tar  docker-archive of one platform (ctr -n k8s.io images import)
# Environment: VERSION (default: git describe --tags --always --dirty), IMAGE_REPO
# (ghcr.io/edgeplane/edgeplane), IMAGE_ARCHES ("amd64 arm64"), GO.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
VERSION=${VERSION:-$(git describe --tags --always --dirty)}
REPO=${IMAGE_REPO:-ghcr.io/edgeplane/edgeplane}
ARCHES=${IMAGE_ARCHES:-amd64 arm64}
OUT=bin/image
# The same result on any host: no cgo, no VCS stamp (VERSION names the commit), this toolchain.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

cni_module=github.com/containernetworking/plugins
cni_version=$($GO list -m -f '{{.Version}}' "$cni_module")
cni_dir=$($GO mod download -json "$cni_module@$cni_version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$cni_dir" ] || { echo "build-image: $cni_module@$cni_version not in the module cache" >&2; exit 1; }

stage=$OUT/stage
rm -rf "$stage"
mkdir -p "$stage/common/etc/ssl/certs" "$stage/common/tmp"
$GO run ./internal/ociimage/cmd/cabundle >"$stage/common/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$stage/common/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/common/etc/group"

platforms=()
for arch in $ARCHES; do
	root=$stage/$arch
	mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/edgeplane/cni-plugins"
	echo "build-image: edgeplane $VERSION linux/$arch" >&2
	GOOS=linux GOARCH=$arch $GO build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
		-o "$root/usr/local/bin/" ./cmd/...
	echo "build-image: CNI plugins $cni_version linux/$arch" >&2
	(cd "$cni_dir" && GOOS=linux GOARCH=$arch $GO build -trimpath \
		-ldflags "-s -w -X $cni_module/pkg/utils/buildversion.BuildVersion=$cni_version" \
		-o "$OLDPWD/$root/usr/local/lib/edgeplane/cni-plugins/" ./plugins/ipam/host-local ./plugins/meta/portmap ./plugins/meta/bandwidth ./plugins/main/loopback)
	platforms+=(-platform "linux/$arch=$root")
done
# Modes do not depend on the caller's umask.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
find "$stage"/*/usr/local -type f -exec chmod 0755 {} +
chmod 1777 "$stage/common/tmp"

$GO run ./internal/ociimage/cmd/mkimage -ref "$REPO:$VERSION" -layer "$stage/common" "${platforms[@]}" \
	-entrypoint '["/usr/local/bin/edgeplane-agent"]' \
	-env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	-env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
	-label org.opencontainers.image.title=edgeplane \
	-label org.opencontainers.image.source=https://github.com/edgeplane/edgeplane \
	-label "org.opencontainers.image.version=$VERSION" \
	-out "$OUT/edgeplane-$VERSION.tar" -out-platform "$OUT/edgeplane-$VERSION-{arch}.tar"
rm -rf "$stage"
(cd "$OUT" && sha256sum edgeplane-"$VERSION"*.tar) >&2
