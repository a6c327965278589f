#!/usr/bin/env bash
# Builds real Kubernetes and etcd binaries from their Go modules, cached by version.
#   scripts/build-k8s.sh [binary...]   (default: etcd kube-apiserver)
# Prints the bin directory on stdout and progress on stderr; the binaries land in
# $EDGEPLANE_CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin. Only what is missing is built.
#
# Besides the control-plane binaries it builds what the conformance run needs from the same
# module: kube-scheduler, kubectl, e2e.test (`go test -c` of test/e2e), agnhost and
# regression-issue-74839 (the programs of two e2e test images, see scripts/build-e2e-images.sh).
# The Kubernetes main packages build in one `go build` (one action graph, no package compiled
# twice); e2e.test and etcd build beside it in parallel. Each build prints its time.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.${K8S_VERSION#v1.}}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
CACHE=${EDGEPLANE_CACHE:-/var/cache/edgeplane}
BIN=$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin
mkdir -p "$BIN"

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(etcd kube-apiserver)

declare -A pkg=(
	[kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
	[kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
	[kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
	[kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
	[kubelet]=k8s.io/kubernetes/cmd/kubelet
	[kubectl]=k8s.io/kubernetes/cmd/kubectl
	[agnhost]=k8s.io/kubernetes/test/images/agnhost
	[regression-issue-74839]=k8s.io/kubernetes/test/images/regression-issue-74839
	[e2e.test]=k8s.io/kubernetes/test/e2e
)

missing_k8s=() ; need_e2e=0 ; need_etcd=0
for b in "${want[@]}"; do
	[ -x "$BIN/$b" ] && continue
	case $b in
	etcd) need_etcd=1; continue ;;
	e2e.test) need_e2e=1; continue ;;
	esac
	[ -n "${pkg[$b]:-}" ] || { echo "build-k8s: unknown binary $b" >&2; exit 2; }
	missing_k8s+=("$b")
done

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
mod=$CACHE/k8s-$K8S_VERSION-src

# resolve_k8s writes the scratch module once, then adds what the requested packages (and, for
# e2e.test, its tests) import; the parallel builds after it then never write go.mod themselves.
resolve_k8s() {
	mkdir -p "$mod"
	if [ ! -f "$mod/go.sum" ]; then
		{
			echo "module edgeplane.local/k8sbuild"
			echo "go 1.26"
			echo "require k8s.io/kubernetes $K8S_VERSION"
			echo "replace ("
			for s in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
				cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
				cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt \
				kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
				mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming; do
				echo "	k8s.io/$s => k8s.io/$s $STAGING_VERSION"
			done
			echo ")"
		} >"$mod/go.mod"
		printf 'package k8sbuild\n' >"$mod/doc.go"
		(cd "$mod" && for b in "${!pkg[@]}"; do go get "${pkg[$b]}@$K8S_VERSION" >/dev/null 2>&1 || true; done && go mod tidy >/dev/null 2>&1 || true; go get k8s.io/kubernetes@$K8S_VERSION)
	fi
	local pkgs=()
	for b in "${missing_k8s[@]}"; do pkgs+=("${pkg[$b]}"); done
	[ $need_e2e = 0 ] || pkgs+=("${pkg[e2e.test]}")
	(cd "$mod" && go list -deps -test "${pkgs[@]}" >/dev/null)
}

build_k8s_mains() {
	local start=$SECONDS tmp pkgs=()
	for b in "${missing_k8s[@]}"; do pkgs+=("${pkg[$b]}"); done
	echo "build-k8s: building ${missing_k8s[*]} $K8S_VERSION (first time takes minutes)" >&2
	tmp=$(mktemp -d "$BIN/.build.XXXXXX")
	(cd "$mod" && go build -trimpath -ldflags='-s -w' -o "$tmp/" "${pkgs[@]}") || { rm -rf "$tmp"; return 1; }
	for b in "${missing_k8s[@]}"; do mv "$tmp/$b" "$BIN/$b"; done
	rmdir "$tmp"
	echo "build-k8s: ${missing_k8s[*]} built in $((SECONDS - start))s" >&2
}

build_e2e_test() {
	local start=$SECONDS
	echo "build-k8s: building e2e.test $K8S_VERSION (first time takes ~10 minutes)" >&2
	(cd "$mod" && go test -c -trimpath -ldflags='-s -w' -o "$BIN/e2e.test.tmp" "${pkg[e2e.test]}") &&
		mv "$BIN/e2e.test.tmp" "$BIN/e2e.test"
	echo "build-k8s: e2e.test built in $((SECONDS - start))s" >&2
}

build_etcd() {
	local start=$SECONDS emod=$CACHE/etcd-$ETCD_VERSION-src
	mkdir -p "$emod"
	if [ ! -f "$emod/go.sum" ]; then
		printf 'module edgeplane.local/etcdbuild\ngo 1.26\n' >"$emod/go.mod"
		printf 'package etcdbuild\n' >"$emod/doc.go"
		(cd "$emod" && go get go.etcd.io/etcd/server/v3@$ETCD_VERSION)
	fi
	echo "build-k8s: building etcd $ETCD_VERSION" >&2
	(cd "$emod" && go build -trimpath -ldflags='-s -w' -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3) && mv "$BIN/etcd.tmp" "$BIN/etcd"
	echo "build-k8s: etcd built in $((SECONDS - start))s" >&2
}

pids=()
if [ ${#missing_k8s[@]} -gt 0 ] || [ $need_e2e = 1 ]; then
	resolve_k8s
	[ ${#missing_k8s[@]} = 0 ] || { build_k8s_mains & pids+=($!); }
	[ $need_e2e = 0 ] || { build_e2e_test & pids+=($!); }
fi
[ $need_etcd = 0 ] || { build_etcd & pids+=($!); }
failed=0
for j in "${pids[@]}"; do wait "$j" || failed=1; done
[ $failed = 0 ] || { echo "build-k8s: a build failed" >&2; exit 1; }
echo "$BIN"
