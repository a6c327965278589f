#!/usr/bin/env bash
# Builds real flanneld (github.com/flannel-io/flannel) from its Go module, cached by version, for
# the interop tests (tests/interop): a Flannel node next to edgeplane nodes in the netns lab.
#   scripts/build-flanneld.sh
# Prints the directory that holds flanneld on stdout; progress goes to stderr. The first build
# takes a few minutes (cold Go caches), later calls return at once.
#
# flanneld's main package imports every backend, and the tencentvpc backend imports the Tencent
# Cloud SDK, which the module proxy does not serve. The scratch module replaces the two SDK modules
# with stubs that declare just what that backend uses: it compiles, and fails if ever selected
# (the lab only runs the vxlan backend). The build needs a C compiler (gcc, or clang-19 from
# scripts/install-deps.sh).
set -euo pipefail

FLANNEL_VERSION=${FLANNEL_VERSION:-v0.28.10}
CACHE=${EDGEPLANE_CACHE:-/var/cache/edgeplane}
DIR=$CACHE/flannel-$FLANNEL_VERSION
BIN=$DIR/bin
SRC=$DIR/src
mkdir -p "$BIN"

if [ -x "$BIN/flanneld" ]; then
	echo "$BIN"
	exit 0
fi

# cgo: on amd64 the udp backend's packet proxy is C (flannel's own Makefile builds it so too).
export GOFLAGS=-mod=mod CGO_ENABLED=1 GOTOOLCHAIN=local
if [ -z "${CC:-}" ] && ! command -v gcc >/dev/null 2>&1; then
	command -v clang-19 >/dev/null 2>&1 && export CC=clang-19 # scripts/install-deps.sh installs it
fi
TENCENT=github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud

# stub writes the SDK stand-ins: module common (packages common and common/errors) and module vpc
# (package vpc/v20170312), with the names and shapes tencentvpc.go uses.
stub() {
	local s=$SRC/stub
	mkdir -p "$s/common/errors" "$s/vpc/v20170312"
	printf 'module %s/common\n\ngo 1.21\n' "$TENCENT" >"$s/common/go.mod"
	printf 'module %s/vpc\n\ngo 1.21\n' "$TENCENT" >"$s/vpc/go.mod"
	cat >"$s/common/common.go" <<-'EOF'
	// Package common stands in for the Tencent Cloud SDK, which the module proxy does not serve,
	// so that flanneld's tencentvpc backend compiles. Nothing here talks to Tencent Cloud.
	package common

	func StringPtr(v string) *string { return &v }

	func BoolPtr(v bool) *bool { return &v }

	func StringPtrs(vs []string) []*string {
		out := make([]*string, len(vs))
		for i := range vs {
			out[i] = &vs[i]
		}
		return out
	}
	EOF
	cat >"$s/common/errors/errors.go" <<-'EOF'
	// Package errors stands in for the Tencent Cloud SDK's error type.
	package errors

	type TencentCloudSDKError struct {
		Code, Message, RequestId string
	}

	func (e *TencentCloudSDKError) Error() string { return e.Code + ": " + e.Message }
	EOF
	cat >"$s/vpc/v20170312/vpc.go" <<-'EOF'
	// Package v20170312 stands in for the Tencent Cloud VPC API client: every call fails, so the
	// tencentvpc backend compiles but cannot be used.
	package v20170312

	import "errors"

	var errStub = errors.New("tencentvpc backend unavailable: flanneld was built with a stub Tencent Cloud SDK")

	type Filter struct {
		Name   *string
		Values []*string
	}

	type Route struct {
		DestinationCidrBlock *string
		GatewayType          *string
		GatewayId            *string
		RouteId              *uint64
		RouteType            *string
		Enabled              *bool
	}

	type RouteTable struct {
		RouteTableId *string
		RouteSet     []*Route
	}

	type DescribeRouteTablesRequest struct{ Filters []*Filter }

	type DescribeRouteTablesResponse struct {
		Response *struct{ RouteTableSet []*RouteTable }
	}

	type DeleteRoutesRequest struct {
		RouteTableId *string
		Routes       []*Route
	}

	type DeleteRoutesResponse struct{}

	type CreateRoutesRequest struct {
		RouteTableId *string
		Routes       []*Route
	}

	type CreateRoutesResponse struct{}

	type Client struct{}

	func NewClientWithSecretId(secretID, secretKey, region string) (*Client, error) {
		return &Client{}, nil
	}

	func NewDescribeRouteTablesRequest() *DescribeRouteTablesRequest { return &DescribeRouteTablesRequest{} }

	func NewDeleteRoutesRequest() *DeleteRoutesRequest { return &DeleteRoutesRequest{} }

	func NewCreateRoutesRequest() *CreateRoutesRequest { return &CreateRoutesRequest{} }

	func (c *Client) DescribeRouteTables(*DescribeRouteTablesRequest) (*DescribeRouteTablesResponse, error) {
		return nil, errStub
	}

	func (c *Client) DeleteRoutes(*DeleteRoutesRequest) (*DeleteRoutesResponse, error) {
		return nil, errStub
	}

	func (c *Client) CreateRoutes(*CreateRoutesRequest) (*CreateRoutesResponse, error) {
		return nil, errStub
	}
	EOF
}

if [ ! -f "$SRC/.resolved" ]; then
	echo "build-flanneld: resolving flannel $FLANNEL_VERSION in a scratch module" >&2
	rm -rf "$SRC"
	mkdir -p "$SRC"
	stub
	cat >"$SRC/go.mod" <<-EOF
	module edgeplane.local/flannelbuild

	go 1.26

	require github.com/flannel-io/flannel $FLANNEL_VERSION

	replace (
		$TENCENT/common => ./stub/common
		$TENCENT/vpc => ./stub/vpc
	)
	EOF
	printf 'package flannelbuild\n' >"$SRC/doc.go"
	# The marker goes last, so a half-done resolution is redone by the next call.
	(cd "$SRC" && go get github.com/flannel-io/flannel@$FLANNEL_VERSION && go list -deps github.com/flannel-io/flannel >/dev/null) >&2
	touch "$SRC/.resolved"
fi

echo "build-flanneld: building flanneld $FLANNEL_VERSION (first time takes minutes)" >&2
start=$SECONDS
(cd "$SRC" && go build -trimpath \
	-ldflags="-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
	-o "$BIN/flanneld.tmp" github.com/flannel-io/flannel)
mv "$BIN/flanneld.tmp" "$BIN/flanneld"
echo "build-flanneld: flanneld built in $((SECONDS - start))s" >&2
echo "$BIN"
