#!/usr/bin/env bash
# Builds real Kubernetes and etcd binaries from their Go modules, cached by version.
#   scripts/build-k8s.sh [binary...]   (default: etcd kube-apiserver)
# Prints nothing but progress on stderr; the binaries land in $EDGEPLANE_CACHE/k8s-$K8S_VERSION/bin.
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
	[kubelet]=k8s.io/kubernetes/cmd/kubelet
	[kubectl]=k8s.io/kubernetes/cmd/kubectl
)

missing_k8s=() ; need_etcd=0
for b in "${want[@]}"; do
	[ -x "$BIN/$b" ] && continue
	if [ "$b" = etcd ]; then need_etcd=1; continue; fi
	[ -n "${pkg[$b]:-}" ] || { echo "build-k8s: unknown binary $b" >&2; exit 2; }
	missing_k8s+=("$b")
done

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

if [ ${#missing_k8s[@]} -gt 0 ]; then
	mod=$CACHE/k8s-$K8S_VERSION-src
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
	for b in "${missing_k8s[@]}"; do
		echo "build-k8s: building $b $K8S_VERSION (first time takes minutes)" >&2
		(cd "$mod" && go build -trimpath -ldflags='-s -w' -o "$BIN/$b.tmp" "${pkg[$b]}") && mv "$BIN/$b.tmp" "$BIN/$b"
	done
fi

if [ $need_etcd = 1 ]; then
	mod=$CACHE/etcd-$ETCD_VERSION-src
	mkdir -p "$mod"
	if [ ! -f "$mod/go.sum" ]; then
		printf 'module edgeplane.local/etcdbuild\ngo 1.26\n' >"$mod/go.mod"
		printf 'package etcdbuild\n' >"$mod/doc.go"
		(cd "$mod" && go get go.etcd.io/etcd/server/v3@$ETCD_VERSION)
	fi
	echo "build-k8s: building etcd $ETCD_VERSION" >&2
	(cd "$mod" && go build -trimpath -ldflags='-s -w' -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3) && mv "$BIN/etcd.tmp" "$BIN/etcd"
fi
echo "$BIN"
