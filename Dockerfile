# syntax=docker/dockerfile:1
# The edgeplane image: edgeplane-agent, edgeplane-bgp, edgeplane-cni, edgeplane-install and edgeplanectl in
# /usr/local/bin, and the reference CNI plugins the conflist chains (host-local, portmap, bandwidth)
# and the runtime runs for every sandbox (loopback) in /usr/local/lib/edgeplane/cni-plugins, which
# edgeplane-install copies only to nodes that lack them.
# All static (CGO_ENABLED=0); the BPF objects are committed, so no clang is needed here.
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=<version> \
#     -t ghcr.io/edgeplane/edgeplane:<version> .
# `make image` (scripts/build-image.sh) builds the same files at the same paths without Docker,
# reproducibly; it is the path the lab tests. Its base differs: instead of distroless' Debian
# userland (ca-certificates, tzdata, os-release, nsswitch.conf) it carries only a CA bundle from
# golang.org/x/crypto/x509roots/fallback, /etc/passwd, /etc/group and /tmp (docs/install.md, Image).
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
ARG CNI_PLUGINS_VERSION=v1.9.1
ARG VERSION=dev
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-trimpath
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	go build -ldflags="-s -w -X main.version=$VERSION" -o /out/ ./cmd/...
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	for p in ipam/host-local meta/portmap meta/bandwidth main/loopback; do \
		GOBIN=/out/cni-plugins go install \
			-ldflags="-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
			"github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION" || exit 1; \
	done

# Runs as root (uid 0): the pins under /sys/fs/bpf and the CNI directories are root's. Privilege
# comes from the DaemonSet's capabilities, not from the image.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/edgeplane-agent /out/edgeplane-bgp /out/edgeplane-cni /out/edgeplane-install /out/edgeplanectl /usr/local/bin/
COPY --from=build /out/cni-plugins/host-local /out/cni-plugins/portmap /out/cni-plugins/bandwidth /out/cni-plugins/loopback /usr/local/lib/edgeplane/cni-plugins/
ENTRYPOINT ["/usr/local/bin/edgeplane-agent"]
