#!/usr/bin/env bash
# Runs the datapath's tests (pkg/datapath: every prog.Run test, the loader's and the attach tests)
# on the kernels edge nodes run, each booted in qemu: Debian's own kernel packages for 5.10
# (bullseye), 6.1 (bookworm) and bookworm-backports' kernel, at the versions pinned below.
#   scripts/test-kernels.sh [label...]      (labels: 5.10 6.1 bpo; default all)
# Prints a kernel x test table on stdout (pass/fail/skip counts of the top-level tests, the
# failing tests' names, the skipped tests' and subtests' names, the guest's time) and exits
# non-zero when any test failed or a guest did not report.
#
# How: the kernel packages (and busybox-static, the guest's userland) are resolved and downloaded
# with a scratch apt configuration per suite under $EDGEPLANE_CACHE/kernels (own sources, lists,
# archives, an empty dpkg status: the machine's apt state is never read or written) and cached by
# version; from each, vmlinuz and the modules the tests need (with their dependencies, by
# modules.dep) are kept. The test binary is `go test -c ./pkg/datapath`, static. The initramfs is
# busybox, the binary and the modules; its /init mounts proc, sys, devtmpfs and bpffs, loads the
# modules, runs the binary with -test.v and powers off. qemu runs in TCG (software) mode: the
# /dev/kvm of the machines this was written on is a PVM device that hangs stock kernels at boot.
# The guest has no network device (-nic none): its traffic stays inside it. The results come back
# over the serial console, which is kept per kernel under $EDGEPLANE_CACHE/kernels/logs.
#
# Environment: KERNEL_TEST_RUN (-test.run pattern, default: all), KERNEL_TEST_TIMEOUT (seconds per
# guest, default 900), QEMU_ACCEL (default tcg; kvm where /dev/kvm runs stock kernels),
# QEMU_MEMORY (default 2048 MiB), QEMU_SMP (default 2).
# KERNEL_REPORT_ONLY=1 boots nothing: it prints the table (and the benchmark table) again from the
# serial logs the last runs left, e.g. to put the kernels of two separate runs in one table.
# KERNEL_BENCH=<benchtime> (e.g. 2000x) also runs the datapath's per-program benchmarks
# (prog_bench_test.go, prog.Benchmark) in each guest after the tests, with that -test.benchtime,
# and prints a markdown table of their ns/pkt by kernel (the median run's, above an empty
# program's median run) (also kept as $EDGEPLANE_CACHE/kernels/
# logs/bench.md): `make bench-kernels` runs it with the tests skipped. Under TCG the figures are
# an emulated CPU's: compare kernels within one table, never with docs/benchmarks.md's host runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# label suite package version: pinned, so that a run is reproducible; the versions used are printed.
# Debian's mirror keeps only a suite's current kernels: when a pin disappears from it, the script
# says so and names the current version to pin instead.
PINS=(
	"5.10 bullseye linux-image-5.10.0-46-amd64 5.10.262-1"
	"6.1 bookworm linux-image-6.1.0-57-amd64 6.1.192-3"
	"bpo bookworm-backports linux-image-6.12.95+deb12-amd64 6.12.95-1~bpo12+1"
)
BUSYBOX_PIN="bookworm busybox-static 1:1.35.0-4+deb12u1+b1"
# The modules the tests load (the rest are built in, or loaded by these as dependencies).
MODULES=(veth bridge tun vxlan sch_ingress cls_bpf dummy)

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE=${EDGEPLANE_CACHE:-/var/cache/edgeplane}/kernels
GO=${GO:-go}
RUN=${KERNEL_TEST_RUN:-.}
BENCH=${KERNEL_BENCH:-}
REPORT_ONLY=${KERNEL_REPORT_ONLY:-}
TIMEOUT=${KERNEL_TEST_TIMEOUT:-900}
ACCEL=${QEMU_ACCEL:-tcg}
MEMORY=${QEMU_MEMORY:-2048}
SMP=${QEMU_SMP:-2}

log() { echo "test-kernels: $*" >&2; }

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)

if [ ${#need[@]} -gt 0 ]; then
	log "installing: ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	}
fi

# apt_for SUITE: sets apt_opts to the suite's scratch configuration, updating its lists once.
apt_for() {
	local suite=$1 dir=$CACHE/apt-$1
	apt_opts=(
		-o "Dir::Etc::sourcelist=$dir/sources.list" -o "Dir::Etc::sourceparts=$dir/empty"
		-o "Dir::Etc::preferences=$dir/empty/preferences" -o "Dir::Etc::preferencesparts=$dir/empty"
		-o "Dir::State=$dir/state" -o "Dir::State::Lists=$dir/lists" -o "Dir::State::status=$dir/status"
		-o "Dir::Cache=$dir/cache" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
		-o "APT::Architecture=amd64" -o "APT::Architectures=amd64" -o "APT::Install-Recommends=false"
	)
	[ -f "$dir/lists/.updated" ] && return 0
	mkdir -p "$dir"/{empty,state,lists/partial,cache/archives/partial}
	: >"$dir/status"
	local key=/usr/share/keyrings/debian-archive-keyring.gpg
	echo "deb [signed-by=$key] $DEBIAN_MIRROR $suite main" >"$dir/sources.list"
	case $suite in
	bullseye | bookworm) echo "deb [signed-by=$key] $DEBIAN_SECURITY_MIRROR $suite-security main" >>"$dir/sources.list" ;;
	esac
	apt-get "${apt_opts[@]}" -qq update >&2
	touch "$dir/lists/.updated"
}

# fetch_deb SUITE PACKAGE VERSION: prints the path of the cached .deb, downloading it once.
fetch_deb() {
	local suite=$1 pkg=$2 version=$3 debs=$CACHE/debs
	mkdir -p "$debs"
	local f
	f=$(ls "$debs/${pkg}_"*"${version#*:}_"*.deb 2>/dev/null | head -1 || true)
	if [ -z "$f" ]; then
		apt_for "$suite"
		if ! (cd "$debs" && apt-get "${apt_opts[@]}" -qq download "$pkg=$version" >&2); then
			# The cached lists may predate the pin: refresh them once.
			rm -f "$CACHE/apt-$suite/lists/.updated"
			apt_for "$suite"
		fi
		if [ -z "$(ls "$debs/${pkg}_"*"${version#*:}_"*.deb 2>/dev/null)" ] &&
			! (cd "$debs" && apt-get "${apt_opts[@]}" -qq download "$pkg=$version" >&2); then
			local current
			current=$(apt-cache "${apt_opts[@]}" policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
			log "$pkg $version is not on $suite's mirror any more (candidate: ${current:-none});" \
				"pin a current version in scripts/test-kernels.sh (apt-cache search '^linux-image-' in $suite)"
			return 1
		fi
		f=$(ls "$debs/${pkg}_"*"${version#*:}_"*.deb | head -1)
	fi
	echo "$f"
}

# module_depends FILE: the modules a module needs, from its .modinfo.
module_depends() {
	case $1 in
	*.xz) xz -dc "$1" ;;
	*.zst) zstd -qdc "$1" ;;
	*) cat "$1" ;;
	esac | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}

# kernel_dir SUITE PACKAGE VERSION: prints a directory with vmlinuz, modules/*.ko (uncompressed)
# and modules.load (the order to insmod them in), made once per version.
kernel_dir() {
	local suite=$1 pkg=$2 version=$3
	local dir=$CACHE/$pkg-$version
	if [ ! -f "$dir/.done" ]; then
		local deb tmp
		deb=$(fetch_deb "$suite" "$pkg" "$version")
		tmp=$(mktemp -d "$CACHE/extract.XXXXXX")
		dpkg-deb -x "$deb" "$tmp"
		rm -rf "$dir" && mkdir -p "$dir/modules"
		cp "$tmp"/boot/vmlinuz-* "$dir/vmlinuz"
		local mdir
		mdir=$(echo "$tmp"/lib/modules/*)
		# Debian's package has no modules.dep (made at install): the dependencies are read from each
		# module's own .modinfo (depends=).
		local -A seen=()
		local order=()
		add_module() { # add_module NAME: its dependencies first
			local name=$1 path dep
			[ -n "${seen[$name]:-}" ] && return 0
			seen[$name]=1
			if grep -qE "/(${name}|${name//_/-})\.ko(\.[a-z]+)?$" "$mdir/modules.builtin" 2>/dev/null; then
				return 0
			fi
			path=$(find "$mdir/kernel" \( -name "$name.ko*" -o -name "${name//_/-}.ko*" \) | head -1)
			[ -n "$path" ] || { log "$pkg has no module $name"; return 1; }
			for dep in $(module_depends "$path"); do add_module "$dep" || return 1; done
			order+=("$path")
		}
		local m path
		for m in "${MODULES[@]}"; do
			add_module "$m" || { rm -rf "$tmp"; return 1; }
		done
		: >"$dir/modules.load"
		for path in "${order[@]}"; do
			local name
			name=$(basename "$path")
			case $name in
			*.ko.xz) xz -dc "$path" >"$dir/modules/${name%.xz}" ;;
			*.ko.zst) zstd -qdc "$path" >"$dir/modules/${name%.zst}" ;;
			*) cp "$path" "$dir/modules/$name" ;;
			esac
			echo "${name%.ko*}.ko" >>"$dir/modules.load"
		done
		basename "$mdir" >"$dir/release"
		rm -rf "$tmp"
		touch "$dir/.done"
	fi
	echo "$dir"
}

busybox_bin() {
	local dir=$CACHE/busybox-${BUSYBOX_PIN##* }
	if [ ! -x "$dir/busybox" ]; then
		local deb tmp
		# shellcheck disable=SC2086
		deb=$(fetch_deb $BUSYBOX_PIN)
		tmp=$(mktemp -d "$CACHE/extract.XXXXXX")
		dpkg-deb -x "$deb" "$tmp"
		mkdir -p "$dir" && cp "$tmp/bin/busybox" "$dir/busybox"
		rm -rf "$tmp"
	fi
	echo "$dir/busybox"
}

# The guest's /init: everything it prints goes to the serial console.
write_init() {
	cat >"$1" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmp /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
for m in $(cat /modules.load); do insmod /modules/$m || echo "EDGEPLANE-INSMOD-FAILED $m"; done
echo "EDGEPLANE-KERNEL $(uname -r)"
read -r run </test.run
start=$(cut -d' ' -f1 /proc/uptime)
cd /tmp && /datapath.test -test.v -test.count=1 -test.timeout=20m -test.run "$run" 2>&1
rc=$?
end=$(cut -d' ' -f1 /proc/uptime)
echo "EDGEPLANE-TEST-EXIT $rc $start $end"
if [ -s /test.bench ]; then
	read -r benchtime </test.bench
	/datapath.test -test.run '^$' -test.bench . -test.benchtime "$benchtime" -test.timeout=40m 2>&1 | sed 's/^/EDGEPLANE-BENCH /'
	echo "EDGEPLANE-BENCH-EXIT"
fi
sync
poweroff -f
EOF
	chmod +x "$1"
}

# boot LABEL KERNELDIR TESTBIN BUSYBOX: runs the tests in a guest; the serial log is logs/LABEL.log.
boot() {
	local label=$1 kdir=$2 testbin=$3 busybox=$4
	local root
	root=$(mktemp -d "$CACHE/initramfs.XXXXXX")
	mkdir -p "$root/bin" "$root/modules" "$root/sys/fs/bpf"
	cp "$busybox" "$root/bin/busybox"
	cp "$testbin" "$root/datapath.test"
	cp "$kdir"/modules/*.ko "$root/modules/" 2>/dev/null || true
	cp "$kdir/modules.load" "$root/modules.load"
	echo "$RUN" >"$root/test.run"
	echo "$BENCH" >"$root/test.bench"
	write_init "$root/init"
	local initrd=$CACHE/initramfs-$label.cpio.gz
	(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1) >"$initrd"
	rm -rf "$root"
	mkdir -p "$CACHE/logs"
	local logf=$CACHE/logs/$label.log
	: >"$logf"
	local accel=(-accel tcg,thread=multi)
	[ "$ACCEL" = kvm ] && accel=(-enable-kvm -cpu host)
	timeout --foreground "$TIMEOUT" qemu-system-x86_64 "${accel[@]}" -smp "$SMP" -m "$MEMORY" \
		-nic none -display none -monitor none -serial "file:$logf" -no-reboot \
		-kernel "$kdir/vmlinuz" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3" </dev/null >&2 || true
	rm -f "$initrd"
}

# report LABEL PKG VERSION SECONDS: one table row from the serial log; returns 1 on failure.
rows=()
report() {
	local label=$1 pkg=$2 version=$3 secs=$4 logf=$CACHE/logs/$1.log
	local pass fail skip failed skipped exit guest status=ok
	pass=$(grep -cE '^--- PASS: ' "$logf" || true)
	fail=$(grep -cE '^--- FAIL: ' "$logf" || true)
	skip=$(grep -cE '^--- SKIP: ' "$logf" || true)
	failed=$(grep -E '^--- FAIL: ' "$logf" | awk '{print $3}' | paste -sd' ' || true)
	skipped=$(grep -E '^ *--- SKIP: ' "$logf" | awk '{print $3}' | paste -sd' ' || true)
	exit=$(grep -aE '^EDGEPLANE-TEST-EXIT ' "$logf" | tail -1 || true)
	if [ -z "$exit" ]; then
		status="no result (see $logf)"
		guest=-
	else
		guest=$(echo "$exit" | awk '{printf "%.0fs", $4 - $3}')
		[ "$(echo "$exit" | awk '{print $2}')" = 0 ] || status=FAIL
	fi
	if grep -q '^EDGEPLANE-INSMOD-FAILED' "$logf"; then
		status="$status; insmod failed: $(grep -a '^EDGEPLANE-INSMOD-FAILED' "$logf" | awk '{print $2}' | paste -sd' ')"
	fi
	rows+=("$(printf '%-5s %-34s %-20s %5s %5s %5s %6s %6s  %s  %s' "$label" "$pkg" "$version" "$pass" "$fail" "$skip" "$guest" "${secs}s" "$status" "$failed")")
	[ -z "$skipped" ] || rows+=("      skipped: $skipped")
	[ "$status" = ok ]
}

labels=("$@")
[ ${#labels[@]} -gt 0 ] || labels=(5.10 6.1 bpo)

start=$SECONDS
mkdir -p "$CACHE"
if [ -z "$REPORT_ONLY" ]; then
	testbin=$(mktemp "$CACHE/datapath.test.XXXXXX")
	trap 'rm -f "$testbin"' EXIT
	CGO_ENABLED=0 $GO test -c -o "$testbin" ./pkg/datapath
	busybox=$(busybox_bin)
	log "test binary and busybox ready in $((SECONDS - start))s"
fi

failed=0
for label in "${labels[@]}"; do
	pin=
	for p in "${PINS[@]}"; do [ "${p%% *}" = "$label" ] && pin=$p; done
	[ -n "$pin" ] || { log "no kernel labelled $label (have: 5.10 6.1 bpo)"; exit 2; }
	read -r _ suite pkg version <<<"$pin"
	t1=$SECONDS
	if [ -z "$REPORT_ONLY" ]; then
		t0=$SECONDS
		kdir=$(kernel_dir "$suite" "$pkg" "$version")
		log "$label: $pkg $version ($(cat "$kdir/release")) ready in $((SECONDS - t0))s; booting"
		t1=$SECONDS
		boot "$label" "$kdir" "$testbin" "$busybox"
	fi
	report "$label" "$pkg" "$version" $((SECONDS - t1)) || failed=1
	log "$label: done in $((SECONDS - t1))s"
done

printf '%-5s %-34s %-20s %5s %5s %5s %6s %6s  %s  %s\n' kernel package version pass fail skip guest wall status failing
printf '%s\n' "${rows[@]}"

# bench_table LABEL...: the benchmarks' ns/pkt, one row per benchmark, one column per kernel.
bench_table() {
	local label
	printf '| benchmark |'
	for label in "$@"; do printf ' %s (%s) |' "$label" "$(grep -a '^EDGEPLANE-KERNEL ' "$CACHE/logs/$label.log" | tr -d '\r' | awk '{print $2}' | tail -1)"; done
	printf '\n|---|'
	for label in "$@"; do printf -- '--:|'; done
	printf '\n'
	local names
	names=$(for label in "$@"; do
		grep -a '^EDGEPLANE-BENCH Benchmark' "$CACHE/logs/$label.log" | awk '{print $2}'
	done | sed 's/-[0-9]*$//' | awk '!seen[$0]++')
	local name
	for name in $names; do
		printf '| %s |' "${name#Benchmark}"
		for label in "$@"; do
			# "BenchmarkX-2  N  a ns/op  b ns/pkt  c ns/pkt-p50  d ns/pkt-raw\r" (a serial line): c, the
			# medians' difference, else b (the repeat loop's mean); "fail" for a failed benchmark
			# (its next line); "-" for none (skipped: go test prints nothing without -test.v; or
			# no ns/pkt figure)
			printf ' %s |' "$(grep -a -A1 "^EDGEPLANE-BENCH $name\(-[0-9]*\)\?[[:space:]]" "$CACHE/logs/$label.log" |
				awk '{sub(/\r$/, "")}
					NR == 1 && /ns\/pkt/ {net = p50 = ""; for (i = 3; i <= NF; i++) { if ($i == "ns/pkt") net = $(i-1); if ($i == "ns/pkt-p50") p50 = $(i-1) }
					 printf "%.0f", p50 != "" ? p50 : net; done = 1; exit}
					NR <= 2 && /--- FAIL/ {printf "fail"; done = 1; exit}
					END {if (!done) printf "-"}')"
		done
		printf '\n'
	done
}
if [ -n "$BENCH" ]; then
	bench_table "${labels[@]}" | tee "$CACHE/logs/bench.md"
	for label in "${labels[@]}"; do
		grep -aq '^EDGEPLANE-BENCH-EXIT' "$CACHE/logs/$label.log" || { log "$label: the benchmarks did not finish"; failed=1; }
		if grep -aE '^EDGEPLANE-BENCH (--- FAIL|FAIL)' "$CACHE/logs/$label.log"; then failed=1; fi
	done
fi
log "all in $((SECONDS - start))s (serial logs: $CACHE/logs)"
exit $failed
