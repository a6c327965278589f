#!/usr/bin/env bash
# Builds CoreDNS (github.com/coredns/coredns) from its Go module, cached by version: the kubelet
# cluster's DNS (a Deployment behind kube-system/kube-dns) and the /coredns binary agnhost's DNS
# specs start (scripts/build-e2e-images.sh puts it in both images).
#   scripts/build-coredns.sh
# Prints the directory that holds coredns on stdout; progress goes to stderr.
set -euo pipefail

COREDNS_VERSION=${COREDNS_VERSION:-v1.14.6}
CACHE=${EDGEPLANE_CACHE:-/var/cache/edgeplane}
DIR=$CACHE/coredns-$COREDNS_VERSION
BIN=$DIR/bin
SRC=$DIR/src
mkdir -p "$BIN" "$SRC"

if [ -x "$BIN/coredns" ]; then
	echo "$BIN"
	exit 0
fi

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
if [ ! -f "$SRC/.resolved" ]; then
	printf 'module edgeplane.local/corednsbuild\ngo 1.26\n' >"$SRC/go.mod"
	printf 'package corednsbuild\n' >"$SRC/doc.go"
	# The marker goes last, so a half-done resolution is redone by the next call.
	(cd "$SRC" && go get github.com/coredns/coredns@$COREDNS_VERSION && go list -deps github.com/coredns/coredns >/dev/null) >&2
	touch "$SRC/.resolved"
fi

echo "build-coredns: building coredns $COREDNS_VERSION" >&2
start=$SECONDS
(cd "$SRC" && go build -trimpath \
	-ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
	-o "$BIN/coredns.tmp" github.com/coredns/coredns)
mv "$BIN/coredns.tmp" "$BIN/coredns"
echo "build-coredns: coredns built in $((SECONDS - start))s" >&2
echo "$BIN"
