# edgeplane: make build | image | generate | test | demo | bench
GO ?= go
BIN := $(CURDIR)/bin
# The version binaries and the image are stamped with.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
export EDGEPLANE_CACHE ?= /var/cache/edgeplane

.PHONY: all build image generate check-generated deps k8s cni-plugins containerd flannel yurthub conformance-deps conformance test unit e2e demo bench bench-charts clean

all: build

# Built as the image builds them (scripts/build-image.sh: static, no cgo, -trimpath), so the tests
# and benchmarks run the binaries users run; symbols are kept. A cgo build links libc, whose pages
# counted 1.2 MiB more in a settled agent's resident set (docs/benchmarks.md, "Scale").
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-X main.version=$(VERSION)' -o $(BIN)/ ./cmd/...

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

# OpenYurt's YurtHub for tests/partition TestPartitionThroughYurtHub, built from its Go module
# (cached by version; the first build takes 13-25 minutes on 2 CPUs, compiling ~1,500 packages).
yurthub:
	@scripts/build-yurthub.sh >/dev/null

# What the kubelet cluster and the conformance run (tests/conformance) need besides k8s: kubelet,
# kube-scheduler, kubectl and e2e.test at the cluster's version, CoreDNS, and the e2e images. The
# Go builds and the Debian downloads run side by side, then the images are written; each script
# prints its phases' times on stderr. Everything is cached by version: a second call takes seconds.
K8S_BINARIES := etcd kube-apiserver kubelet kube-controller-manager kube-proxy kube-scheduler kubectl e2e.test agnhost regression-issue-74839
conformance-deps:
	@start=$$(date +%s); fail=0; \
	scripts/build-k8s.sh $(K8S_BINARIES) >/dev/null & k=$$!; \
	scripts/build-coredns.sh >/dev/null & c=$$!; \
	scripts/build-e2e-images.sh --rootfs & r=$$!; \
	for p in $$k $$c $$r; do wait $$p || fail=1; done; [ $$fail = 0 ] && \
	scripts/build-e2e-images.sh >/dev/null && \
	echo "conformance-deps: ready in $$(( $$(date +%s) - start ))s" >&2

# The one test command (README and .ci/run): unit tests, datapath tests through BPF_PROG_TEST_RUN,
# the end-to-end suite on the netns lab with a real etcd + kube-apiserver, and the 47 [sig-network]
# [Conformance] specs of e2e.test on the lab's kubelet cluster (tests/conformance), which installs
# edgeplane from `make image`'s tarball (this host's platform only, to save the other's build) the
# way docs/install.md says. Needs root.
HOST_ARCH := $(shell $(GO) env GOARCH)
test: deps conformance-deps cni-plugins containerd flannel yurthub build
	@start=$$(date +%s); IMAGE_ARCHES=$(HOST_ARCH) VERSION=$(VERSION) scripts/build-image.sh >/dev/null && \
	echo "test: edgeplane image built in $$(( $$(date +%s) - start ))s" >&2
	images=$$(scripts/build-e2e-images.sh) && \
	EDGEPLANE_BIN=$(BIN) K8S_BIN=$$(scripts/build-k8s.sh) CNI_PLUGINS_BIN=$$(scripts/install-cni-plugins.sh) \
		FLANNEL_BIN=$$(scripts/build-flanneld.sh) YURTHUB_BIN=$$(scripts/build-yurthub.sh) \
		EDGEPLANE_PAUSE_IMAGE=$$(scripts/install-containerd.sh) \
		EDGEPLANE_IMAGE=$(BIN)/image/edgeplane-$(VERSION)-$(HOST_ARCH).tar \
		E2E_IMAGES="$$images" EDGEPLANE_COREDNS_IMAGE=$$(echo "$$images" | grep '/coredns.tar$$') \
		$(GO) test -count=1 -timeout 45m ./...

# The datapath's tests (pkg/datapath) on Debian's 5.10, 6.1 and bookworm-backports kernels, each
# booted in qemu (TCG); prints a kernel x test table. KERNELS="6.1" picks some. Needs root.
.PHONY: test-kernels
test-kernels:
	@scripts/test-kernels.sh $(KERNELS)

# The datapath's per-program costs (prog.Benchmark) on the same kernels, tests skipped: prints the
# markdown table of docs/benchmarks.md's "Per-program cost by kernel" (TCG: compare kernels only).
.PHONY: bench-kernels
bench-kernels:
	@KERNEL_TEST_RUN='^$$' KERNEL_BENCH=$(or $(BENCHTIME),500x) scripts/test-kernels.sh $(KERNELS)

# The broader [sig-network] set (docs/conformance.md) on the kubelet cluster; writes its summary
# into docs/conformance.md and a JUnit report into docs/conformance/.
conformance: deps conformance-deps cni-plugins containerd build image
	EDGEPLANE_BIN=$(BIN) K8S_BIN=$$(scripts/build-k8s.sh) CNI_PLUGINS_BIN=$$(scripts/install-cni-plugins.sh) \
		EDGEPLANE_PAUSE_IMAGE=$$(scripts/install-containerd.sh) EDGEPLANE_IMAGE=$(BIN)/image/edgeplane-$(VERSION)-amd64.tar \
		E2E_IMAGES="$$(scripts/build-e2e-images.sh)" EDGEPLANE_CONFORMANCE=sig-network \
		EDGEPLANE_CONFORMANCE_REPORT_DIR=$(CURDIR)/docs/conformance EDGEPLANE_CONFORMANCE_DOC=$(CURDIR)/docs/conformance.md \
		$(GO) test -count=1 -timeout 180m -v -run TestConformance ./tests/conformance/

unit: deps
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /tests/)

demo: deps k8s cni-plugins build
	EDGEPLANE_BIN=$(BIN) K8S_BIN=$$(scripts/build-k8s.sh) CNI_PLUGINS_BIN=$$(scripts/install-cni-plugins.sh) \
		$(GO) run ./tests/lab/cmd/demo

bench: deps k8s cni-plugins flannel build
	$(GO) test -run '^$$' -bench . -benchtime 20000x ./pkg/datapath/
	EDGEPLANE_BIN=$(BIN) K8S_BIN=$$(scripts/build-k8s.sh) CNI_PLUGINS_BIN=$$(scripts/install-cni-plugins.sh) \
		FLANNEL_BIN=$$(scripts/build-flanneld.sh) \
		$(GO) test -count=1 -timeout 150m -run '^$$' -bench . -benchtime 1x ./tests/bench/
	$(MAKE) bench-charts

# docs/benchmarks.md's per-machine tables and docs/bench/*.svg, from bench/results.json.
bench-charts:
	$(GO) run ./tests/bench/benchdoc -results bench/results.json -doc docs/benchmarks.md -charts docs/bench

clean:
	rm -rf $(BIN)
