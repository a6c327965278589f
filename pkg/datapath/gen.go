package datapath

// The objects and Go bindings are committed; `make generate` rebuilds them with the pinned toolchain
// and CI fails when that changes anything.
//go:generate go tool bpf2go -cc clang-19 -strip ../../scripts/bpf-strip.sh -cflags "-O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -go-package datapath -target bpfel -type monitor_event pod ../../bpf/pod.c
//go:generate go tool bpf2go -cc clang-19 -strip ../../scripts/bpf-strip.sh -cflags "-O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -go-package datapath -target bpfel overlay ../../bpf/overlay.c
//go:generate go tool bpf2go -cc clang-19 -strip ../../scripts/bpf-strip.sh -cflags "-O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -go-package datapath -target bpfel node ../../bpf/node.c
//go:generate go tool bpf2go -cc clang-19 -strip ../../scripts/bpf-strip.sh -cflags "-O2 -g -Wall -Werror -I../../bpf/include -I/usr/include/x86_64-linux-gnu" -go-package datapath -target bpfel xdp ../../bpf/xdp.c
