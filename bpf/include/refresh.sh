#!/usr/bin/env bash
# Refreshes the libbpf headers the datapath compiles against from Debian's libbpf-dev.
# They are vendored so that the committed objects reproduce whatever libbpf the machine has.
# Licence: libbpf is dual-licensed LGPL-2.1 OR BSD-2-Clause (see LICENSE.libbpf).
set -euo pipefail
cd "$(dirname "$0")"
for h in bpf_helpers.h bpf_helper_defs.h bpf_endian.h; do cp /usr/include/bpf/$h .; done
