// Package events reads the datapath's drop and trace events (bpf/lib/events.h) for
// `edgeplanectl monitor`, and turns their emission on and off.
//
// The programs write one struct monitor_event per packet into the ring buffer events_map, but only
// while a bit of monitor_cfg_map asks for it: MONITOR_DROPS for drops, MONITOR_TRACE for forwarded
// packets. Nobody listening costs the programs one inlined array load per packet.
//
// Subscribe sets bits and Subscription.Close clears them, with listeners counted by an flock on
// the <root>/maps directory: each subscriber holds it shared; a leaving subscriber that can then
// take it exclusively is the last one and clears the word. The bits are ORed in atomically through
// an mmap of the map (BPF_F_MMAPABLE), so concurrent subscribers do not lose each other's bits.
// While several listen, the word is the union of what they asked for: each filters by type itself.
// A subscriber killed with SIGKILL releases its lock but leaves its bits: the next subscriber that
// finds itself alone resets the word to its own bits, and clears it when it leaves.
//
// Events that do not fit in the ring buffer (a reader too slow, or none) are counted per CPU in
// events_lost_map; Reader.Lost sums them.
package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/edgeplane/edgeplane/pkg/maps"
	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
	"github.com/edgeplane/edgeplane/pkg/maps/metricsmap"
)

// Map names in the objects and under <root>/maps.
const (
	MapName       = "events_map"      // BPF_MAP_TYPE_RINGBUF of Event
	LostMapName   = "events_lost_map" // per-CPU count of events the ring buffer had no room for
	ConfigMapName = "monitor_cfg_map" // the one Config word the programs check
)

// Flags are the bits of Config (enum monitor_flags): which events the programs emit.
type Flags uint32

const (
	FlagDrops Flags = 1 << 0 // MONITOR_DROPS
	FlagTrace Flags = 1 << 1 // MONITOR_TRACE: every forwarded packet, costly
)

// Config mirrors struct monitor_cfg.
type Config struct {
	Flags Flags
}

// Type is an event's kind (enum event_type).
type Type uint8

const (
	TypeDrop  Type = 1
	TypeTrace Type = 2
)

func (t Type) String() string {
	switch t {
	case TypeDrop:
		return "drop"
	case TypeTrace:
		return "trace"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// EventFlags say which parts of an Event were found in the packet (enum event_flags).
type EventFlags uint8

const (
	EventIPv4          EventFlags = 1 << 0 // Tuple is valid
	EventInner         EventFlags = 1 << 1 // Inner is valid: the IPv4 packet inside VXLAN
	EventFragment      EventFlags = 1 << 2 // Tuple is a non-first fragment: no ports
	EventInnerFragment EventFlags = 1 << 3
)

// Port is a C __be16 port: two bytes in network order.
type Port [2]byte

// Uint16 is the port number.
func (p Port) Uint16() uint16 { return binary.BigEndian.Uint16(p[:]) }

// Tuple mirrors struct event_tuple.
type Tuple struct {
	Saddr maps.IPv4
	Daddr maps.IPv4
	Sport Port // TCP and UDP only
	Dport Port
	Proto uint8
	Pad   [3]byte
}

// Src and Dst are the tuple's endpoints.
func (t Tuple) Src() netip.AddrPort { return netip.AddrPortFrom(t.Saddr.Addr(), t.Sport.Uint16()) }
func (t Tuple) Dst() netip.AddrPort { return netip.AddrPortFrom(t.Daddr.Addr(), t.Dport.Uint16()) }

// HasPorts reports whether the protocol has ports (TCP or UDP).
func (t Tuple) HasPorts() bool { return t.Proto == unix.IPPROTO_TCP || t.Proto == unix.IPPROTO_UDP }

// Event mirrors struct monitor_event.
type Event struct {
	TsNs    uint64 // bpf_ktime_get_ns: CLOCK_MONOTONIC
	Ifindex uint32 // the device the program ran on
	Len     uint32 // skb->len
	Type    Type
	Reason  uint8 // enum drop_reason (pkg/datapath/dropreason.Reason); 0 for trace
	Dir     uint8 // enum metric_dir
	Flags   EventFlags
	Verdict int32 // TC action: 0 OK, 2 SHOT, 7 REDIRECT
	Tuple   Tuple
	Inner   Tuple
}

// Direction is Dir as the metricsmap package names it.
func (e Event) Direction() metricsmap.Dir { return metricsmap.Dir(e.Dir) }

func (e Event) String() string {
	s := fmt.Sprintf("%s reason=%d dir=%s ifindex=%d len=%d", e.Type, e.Reason, e.Direction(), e.Ifindex, e.Len)
	if e.Flags&EventIPv4 != 0 {
		s += fmt.Sprintf(" %s -> %s proto %d", e.Tuple.Src(), e.Tuple.Dst(), e.Tuple.Proto)
	}
	if e.Flags&EventInner != 0 {
		s += fmt.Sprintf(" [%s -> %s proto %d]", e.Inner.Src(), e.Inner.Dst(), e.Inner.Proto)
	}
	return s
}

// eventSize is sizeof(struct monitor_event); TestLayout checks it against the objects' BTF.
const eventSize = int(unsafe.Sizeof(Event{}))

// Decode converts a ring buffer record.
func Decode(raw []byte) (Event, error) {
	var e Event
	if len(raw) < eventSize {
		return e, fmt.Errorf("event record of %d bytes, want %d", len(raw), eventSize)
	}
	if _, err := binary.Decode(raw[:eventSize], binary.NativeEndian, &e); err != nil {
		return e, fmt.Errorf("decoding event: %w", err)
	}
	return e, nil
}

// Reader reads events from the pinned ring buffer; its owner closes it. One Reader consumes the
// buffer: two readers of the same node would each see part of the events.
type Reader struct {
	rb   *ringbuf.Reader
	m    *ebpf.Map
	lost *typed.Map[uint32, []uint64]
	rec  ringbuf.Record
}

// OpenReader opens events_map and events_lost_map pinned under root.
func OpenReader(root string) (_ *Reader, err error) {
	m, err := maps.OpenPinned(root, MapName) // the consumer position is written through an mmap
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	lost, err := typed.OpenReadOnly[uint32, []uint64](root, LostMapName)
	if err != nil {
		return nil, err
	}
	rb, err := ringbuf.NewReader(m)
	if err != nil {
		lost.Close()
		return nil, fmt.Errorf("reading ring buffer %s: %w", MapName, err)
	}
	return &Reader{rb: rb, m: m, lost: lost}, nil
}

// Read blocks until the next event, the deadline (os.ErrDeadlineExceeded) or Close (ErrClosed).
func (r *Reader) Read() (Event, error) {
	if err := r.rb.ReadInto(&r.rec); err != nil {
		return Event{}, err
	}
	return Decode(r.rec.RawSample)
}

// ErrClosed is what Read returns after Close.
var ErrClosed = ringbuf.ErrClosed

// SetDeadline makes Read give up at t (zero: never).
func (r *Reader) SetDeadline(t time.Time) { r.rb.SetDeadline(t) }

// Lost is the number of events the programs could not write since the map was created.
func (r *Reader) Lost() (uint64, error) {
	perCPU, err := r.lost.Get(0)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// Close unblocks a pending Read and releases the handles.
func (r *Reader) Close() error {
	return errors.Join(r.rb.Close(), r.lost.Close(), r.m.Close())
}

// Subscription is a listener's claim on monitor_cfg_map; Close withdraws it.
type Subscription struct {
	m    *ebpf.Map
	mem  []byte // the map's value, mmapped
	lock *os.File
}

// Subscribe turns on the events in flags for as long as the Subscription is open (see the package
// comment for several listeners).
func Subscribe(root string, flags Flags) (_ *Subscription, err error) {
	m, err := maps.OpenPinned(root, ConfigMapName)
	if err != nil {
		return nil, err
	}
	s := &Subscription{m: m}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	s.mem, err = unix.Mmap(m.FD(), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping %s (created without BPF_F_MMAPABLE by an older agent?): %w", ConfigMapName, err)
	}
	dir := filepath.Join(root, maps.Dir)
	s.lock, err = os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	fd := int(s.lock.Fd())
	// Alone: whatever bits are set were left by a listener that died; start from ours.
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err == nil {
		atomic.StoreUint32(s.word(), uint32(flags))
	}
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	// Again after taking the shared lock: converting the exclusive one is not atomic, and another
	// subscriber that found itself alone in between stored only its own bits.
	atomic.OrUint32(s.word(), uint32(flags))
	return s, nil
}

func (s *Subscription) word() *uint32 { return (*uint32)(unsafe.Pointer(&s.mem[0])) }

// Flags is the word the programs see now (the union of all listeners' flags).
func (s *Subscription) Flags() Flags { return Flags(atomic.LoadUint32(s.word())) }

// Close withdraws the subscription: the last listener to leave turns events off.
func (s *Subscription) Close() error {
	var err error
	fd := int(s.lock.Fd())
	if err = unix.Flock(fd, unix.LOCK_UN); err == nil {
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			atomic.StoreUint32(s.word(), 0)
		}
	}
	return errors.Join(err, s.release())
}

func (s *Subscription) release() error {
	var errs []error
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // drops the lock
	}
	if s.mem != nil {
		errs = append(errs, unix.Munmap(s.mem))
	}
	errs = append(errs, s.m.Close())
	return errors.Join(errs...)
}

// ReadConfig returns the word the programs see, for tests and diagnostics.
func ReadConfig(root string) (Config, error) {
	m, err := typed.OpenReadOnly[uint32, Config](root, ConfigMapName)
	if err != nil {
		return Config{}, err
	}
	defer m.Close()
	return m.Get(0)
}
