#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine needs to build, test and benchmark edgeplane.
# Idempotent: a machine that already has everything returns in well under a second.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have clang-19   || need+=(clang-19)
have llvm-strip-19 || need+=(llvm-19)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
have bpftool    || need+=(bpftool)
have ip         || need+=(iproute2)
have iperf3     || need+=(iperf3)
have sockperf   || need+=(sockperf)
have iptables   || need+=(iptables)
have bridge     || need+=(iproute2)
have ethtool    || need+=(ethtool)
have tcpdump    || need+=(tcpdump)
have taskset    || need+=(util-linux)
have nsenter    || need+=(util-linux)
have ping       || need+=(iputils-ping)
have socat      || need+=(socat)

if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# bpffs and the kernel features the datapath needs.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
