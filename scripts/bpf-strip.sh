#!/bin/sh
# The strip step of bpf2go (pkg/datapath/gen.go), which runs `<strip> -g <object>`: DWARF goes, as
# bpf2go asks, and so do the relocations of .BTF.ext, which only a linker reads (cilium/ebpf
# reads .BTF.ext itself but no relocation of it). They were 273 KB of the 988 KB of objects the
# agent's binary embeds, and so of the pages it maps.
exec llvm-strip-19 --remove-section=.rel.BTF.ext "$@"
