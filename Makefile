# edgeplane: make build | image | generate | test | demo | bench
GO ?= go
BIN := $(CURDIR)/bin
# The version binaries and the image are stamped with.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
export EDGEPLANE_CACHE ?= /var/cache/edgeplane

.PHONY: all build image generate check-generated deps k8s cni-plugins containerd flannel test unit e2e demo bench clean

all: build

build:
	$(GO) build -ldflags '-X main.version=$(VERSION)' -o $(BIN)/ ./cmd/...

# edgeplane's image for linux/amd64 and linux/arm64, with Go only (no Docker): bin/image/
# edgeplane-<version>.tar (OCI, both platforms) and edgeplane-<version>-<arch>.tar (docker-archive).
image:
	@VERSION=$(VERSION) scripts/build-image.sh

generate: deps
	$(GO) generate ./pkg/datapath/... ./deploy/...

# CI: the committed objects and bindings must be what the sources produce.
check-generated: generate
	git diff --exit-code -- pkg/datapath bpf deploy || { echo "generated files are stale: run make generate and commit" >&2; exit 1; }

deps:
	@scripts/install-deps.sh

# kube-controller-manager makes EndpointSlices and kube-proxy is the Services baseline
# (tests/lab TestServices, Lab.StartControllerManager, Lab.StartKubeProxy).
k8s:
	@scripts/build-k8s.sh etcd kube-apiserver kubelet kube-controller-manager kube-proxy >/dev/null

containerd:
	@scripts/install-containerd.sh >/dev/null

cni-plugins:
	@scripts/install-cni-plugins.sh >/dev/null

# Real flanneld for the interop tests (tests/interop), built from its Go module.
flannel:
	@scripts/build-flanneld.sh >/dev/null

# The one test command (README and .ci/run): unit tests, datapath tests through BPF_PROG_TEST_RUN
# and the end-to-end suite on the netns lab with a real etcd + kube-apiserver. Needs root.
test: deps k8s cni-plugins containerd flannel build
	EDGEPLANE_BIN=$(BIN) K8S_BIN=$$(scripts/build-k8s.sh) CNI_PLUGINS_BIN=$$(scripts/install-cni-plugins.sh) \
		FLANNEL_BIN=$$(scripts/build-flanneld.sh) EDGEPLANE_PAUSE_IMAGE=$$(scripts/install-containerd.sh) \
		$(GO) test -count=1 -timeout 45m ./...

unit: deps
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /tests/)

demo: deps k8s cni-plugins build
	EDGEPLANE_BIN=$(BIN) K8S_BIN=$$(scripts/build-k8s.sh) CNI_PLUGINS_BIN=$$(scripts/install-cni-plugins.sh) \
		$(GO) run ./tests/lab/cmd/demo

bench: deps k8s cni-plugins flannel build
	$(GO) test -run '^$$' -bench . -benchtime 20000x ./pkg/datapath/
	EDGEPLANE_BIN=$(BIN) K8S_BIN=$$(scripts/build-k8s.sh) CNI_PLUGINS_BIN=$$(scripts/install-cni-plugins.sh) \
		FLANNEL_BIN=$$(scripts/build-flanneld.sh) \
		$(GO) test -count=1 -timeout 60m -run '^$$' -bench . -benchtime 1x ./tests/bench/

clean:
	rm -rf $(BIN)
