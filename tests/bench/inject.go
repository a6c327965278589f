package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/tests/lab"
)

// Packet rates of a node's receive path are measured with the kernel's own packet generator for
// XDP: BPF_PROG_RUN in live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES) runs an XDP program on
// frames as if the node's NIC had received them, and acts on the verdict for real: XDP_DROP frees
// the frame, XDP_PASS turns it into an skb and hands it to the node's stack (generic XDP, TC,
// netfilter, routing, delivery), synchronously, inside the syscall. So the time one run of N
// frames takes, on one pinned CPU, is what the node spends receiving them, with no sender's cost
// mixed in; the rate is N over that time.
//
// Two programs inject: the node's own node_xdp (what a NIC with native XDP runs: the verdict is
// the datapath's), and injectPass, which passes every frame to the stack (a NIC without native
// XDP: whatever the node runs after it, kube-proxy's iptables rules or edgeplane's TC programs,
// decides). Pages are recycled between frames without being re-initialised, and
// NAT rewrites headers in place, so injectPass first writes the frame's headers back from the
// template: every frame is the packet the benchmark built.

const xdpLiveFrames = 1 << 1 // BPF_F_TEST_XDP_LIVE_FRAMES

// xdpMD mirrors struct xdp_md; BPF_PROG_RUN reads ingress_ifindex (the receiving device) and
// wants data_end to be the frame's length.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// udpFrame builds an Ethernet/IPv4/UDP frame with a 22-byte payload (64 bytes in all), checksums
// filled in.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.AddrPort) []byte {
	const payload = 22
	f := make([]byte, 14+20+8+payload)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+payload))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip, 0))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+payload))
	for i := range payload {
		f[42+i] = byte('a' + i)
	}
	// Pseudo-header sum, then the UDP header and payload.
	var pseudo uint32
	for i := 0; i < 4; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(s[i:])) + uint32(binary.BigEndian.Uint16(d[i:]))
	}
	pseudo += unix.IPPROTO_UDP + uint32(8+payload)
	sum := checksum(f[34:], pseudo)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	return f
}

func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// injectPass loads an XDP program that writes the first 42 bytes of frame (Ethernet, IPv4 and
// UDP headers) over the packet's and returns XDP_PASS.
func injectPass(frame []byte) (*ebpf.Program, error) {
	if len(frame) < 42 {
		return nil, errors.New("frame shorter than its headers")
	}
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 42),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
	}
	for off := 0; off < 40; off += 8 {
		insns = append(insns,
			asm.LoadImm(asm.R5, int64(binary.LittleEndian.Uint64(frame[off:])), asm.DWord),
			asm.StoreMem(asm.R2, int16(off), asm.R5, asm.DWord))
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R5, int32(binary.LittleEndian.Uint16(frame[40:]))),
		asm.StoreMem(asm.R2, 40, asm.R5, asm.Half),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"), // XDP_PASS
		asm.Return(),
	)
	return ebpf.NewProgram(&ebpf.ProgramSpec{Name: "bench_inject", Type: ebpf.XDP, License: "GPL", Instructions: insns})
}

// nodeXDP opens the node_xdp program the agent of n loaded: the loaded program of that name whose
// maps include n's pinned lb_svc_map. On the lab's veth NICs the agent attaches no XDP program
// (pkg/datapath, xdp.go), but it loads node_xdp all the same; injected live, it runs as a NIC
// with native XDP would run it.
func nodeXDP(n *lab.Node) (*ebpf.Program, error) {
	m, err := ebpf.LoadPinnedMap(n.BPFFS+"/maps/lb_svc_map", &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("lb_svc_map of %s: %w", n.Name, err)
	}
	defer m.Close()
	mi, err := m.Info()
	if err != nil {
		return nil, err
	}
	svcMap, _ := mi.ID()
	for id, err := ebpf.ProgramGetNextID(0); err == nil; id, err = ebpf.ProgramGetNextID(id) {
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded since
		}
		if info, err := prog.Info(); err == nil && info.Name == "node_xdp" {
			if ids, ok := info.MapIDs(); ok && slices.Contains(ids, svcMap) {
				return prog, nil
			}
		}
		prog.Close()
	}
	return nil, fmt.Errorf("no node_xdp program loaded with the lb_svc_map of %s", n.Name)
}

// LiveRate runs prog on `frames` copies of frame received on ifname in ns, with the thread pinned
// to CPU cpu, and returns the frames per second the node absorbed (one syscall, frames/64 batches).
func LiveRate(ns lab.Netns, ifname string, prog *ebpf.Program, frame []byte, frames uint32, cpu int) (Sample, error) {
	var s Sample
	err := lab.InNetns(ns, func() error {
		var orig, set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &orig); err != nil {
			return err
		}
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pinning to CPU %d: %w", cpu, err)
		}
		// The thread goes back to the runtime afterwards: unpin it.
		defer unix.SchedSetaffinity(0, &orig)
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		opts := &ebpf.RunOptions{Data: frame, Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifc.Index)}, Repeat: frames, Flags: xdpLiveFrames}
		start := time.Now()
		if _, err := prog.Run(opts); err != nil {
			return fmt.Errorf("live XDP run on %s: %w", ifname, err)
		}
		d := time.Since(start)
		s = Sample{PPS: float64(frames) / d.Seconds(), DurationS: d.Seconds()}
		return nil
	})
	return s, err
}
