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

# bird2 is the route-mode lab's gateway router (tests/lab routesite.go), started by the harness
# inside the lab's router namespace only. Its package would start a bird in the root namespace:
# a policy-rc.d that refuses every start guards the install, and the service is disabled after
# it, so the root namespace never gets a BGP listener or routes from it.
if ! have bird || ! have birdc; then
	echo "installing: bird2 (service not started)"
	guard=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		guard=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$guard"
		chmod 755 "$guard"
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends bird2 >/dev/null || { [ -z "$guard" ] || rm -f "$guard"; exit 1; }
	[ -z "$guard" ] || rm -f "$guard"
	if [ -d /run/systemd/system ]; then
		systemctl disable --now bird.service >/dev/null 2>&1 || true
	fi
fi

# bpffs and the kernel features the datapath needs.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
