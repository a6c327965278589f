#!/usr/bin/env bash
# Builds OpenYurt's YurtHub (github.com/openyurtio/openyurt, cmd/yurthub), cached by version, for
# the lab's YurtHub runs (tests/lab/yurthub.go, tests/partition TestPartitionThroughYurtHub).
#   scripts/build-yurthub.sh
# Prints the directory that holds yurthub on stdout; progress goes to stderr. The first build
# takes 13-25 minutes on 2 CPUs (cold Go caches, ~1,500 packages), later calls return at once.
#
# Where the source comes from: the Go module proxy (go mod download of
# github.com/openyurtio/openyurt@$YURTHUB_VERSION; v1.7.0 is served, while the version list and
# v1.6.1 were refused with 403 "This module version is not available" on 2026-12-06, so pin the
# version). Should the proxy refuse it, OPENYURT_SRC may name a git clone of the OpenYurt
# repository (git archive of the tag). The dependencies come from the module proxy as usual (the
# release's go.mod and go.sum, unchanged). The build is pure Go (CGO_ENABLED=0).
set -euo pipefail

YURTHUB_VERSION=${YURTHUB_VERSION:-v1.7.0}
CACHE=${EDGEPLANE_CACHE:-/var/cache/edgeplane}
DIR=$CACHE/yurthub-$YURTHUB_VERSION
BIN=$DIR/bin
SRC=$DIR/src
MODULE=github.com/openyurtio/openyurt
mkdir -p "$BIN"

if [ -x "$BIN/yurthub" ]; then
	echo "$BIN"
	exit 0
fi

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

# fetch_source lays the release's source tree in $SRC.
fetch_source() {
	rm -rf "$SRC"
	mkdir -p "$SRC"
	local modjson dir
	echo "build-yurthub: asking the module proxy for $MODULE@$YURTHUB_VERSION" >&2
	if modjson=$(cd "$SRC" && go mod download -json "$MODULE@$YURTHUB_VERSION" 2>&1); then
		dir=$(printf '%s\n' "$modjson" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
		if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
			echo "build-yurthub: go mod download named no module directory:" >&2
			printf '%s\n' "$modjson" >&2
			return 1
		fi
		cp -r "$dir"/. "$SRC"/
		chmod -R u+w "$SRC"
		return 0
	fi
	echo "build-yurthub: the module proxy does not serve $MODULE@$YURTHUB_VERSION:" >&2
	printf '%s\n' "$modjson" | sed 's/^/  /' >&2
	if [ -z "${OPENYURT_SRC:-}" ]; then
		echo "build-yurthub: set OPENYURT_SRC to a git clone of the OpenYurt repository (with tag $YURTHUB_VERSION) to build from it" >&2
		return 1
	fi
	echo "build-yurthub: taking $YURTHUB_VERSION from the git clone $OPENYURT_SRC" >&2
	git -C "$OPENYURT_SRC" archive "$YURTHUB_VERSION" | tar -x -C "$SRC"
}

if [ ! -f "$SRC/.resolved" ]; then
	fetch_source
	echo "build-yurthub: resolving the dependencies of cmd/yurthub" >&2
	# The marker goes last, so a half-done resolution is redone by the next call.
	(cd "$SRC" && go list -deps ./cmd/yurthub >/dev/null) >&2
	touch "$SRC/.resolved"
fi

echo "build-yurthub: building yurthub $YURTHUB_VERSION (first time takes minutes)" >&2
start=$SECONDS
(cd "$SRC" && go build -trimpath \
	-ldflags="-s -w -X $MODULE/pkg/projectinfo.gitVersion=$YURTHUB_VERSION" \
	-o "$BIN/yurthub.tmp" ./cmd/yurthub)
mv "$BIN/yurthub.tmp" "$BIN/yurthub"
echo "build-yurthub: yurthub built in $((SECONDS - start))s" >&2
echo "$BIN"
