#!/usr/bin/env bash
# Removes what a crashed lab run left behind (tests/lab): processes in its namespaces, its network
# namespaces (ep<4 hex>-*), its bpffs mounts and its directory. A lab whose owning process is still
# alive is left alone, so running tests are never disturbed.
#   scripts/lab-clean.sh          clean labs whose owner died
#   scripts/lab-clean.sh -n       only show what would be removed
set -euo pipefail
dry=0; [ "${1:-}" = -n ] && dry=1
base=${TMPDIR:-/tmp}
do_() { echo "+ $*"; [ $dry = 1 ] || "$@" || true; }

declare -A live=()
for dir in "$base"/edgeplane-lab-ep????-*; do
	[ -d "$dir" ] || continue
	id=$(basename "$dir" | cut -d- -f3)
	pid=$(cat "$dir/owner.pid" 2>/dev/null || echo 0)
	if [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; then live[$id]=1; continue; fi
	# Unmount the lab's bpffs instances (per node), deepest first.
	for m in $(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do do_ umount -l "$m"; done
done

for ns in $(ip netns list | awk '{print $1}' | grep -E '^ep[0-9a-f]{4}-' || true); do
	id=${ns%%-*}
	[ -n "${live[$id]:-}" ] && continue
	for pid in $(ip netns pids "$ns" 2>/dev/null); do do_ kill -9 "$pid"; done
	do_ ip netns delete "$ns"
done

for dir in "$base"/edgeplane-lab-ep????-*; do
	[ -d "$dir" ] || continue
	id=$(basename "$dir" | cut -d- -f3)
	[ -n "${live[$id]:-}" ] && continue
	if awk -v d="$dir/" 'index($2, d) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
		echo "still mounted under $dir; keeping it" >&2; continue
	fi
	# Logs of failed runs are worth a look; keep them unless asked.
	[ "${LAB_CLEAN_LOGS:-0}" = 1 ] && do_ rm -rf "$dir"
done
exit 0
