// Package snapshot keeps the agent's last good state on disk, so that a node rebooted while cut
// off from the API server can program its datapath again without it (docs/autonomy.md).
//
// A State is what the reconcilers last wrote to the maps, in their neutral types (routes, nodes,
// domains, Service frontends and backend sets, node ports included), plus this node's own
// registration (node IP, pod CIDR, VTEP MAC, domain) and, for each Service backend that is a pod
// of this node, the pod's name (from its EndpointSlice's targetRef), so that a backend whose pod
// came back with a new IP can be repaired from the CNI plugin's name index.
//
// The file is JSON with a format version. Write refuses a State whose encoding passes a size
// bound, and replaces the file atomically: a temporary file in the same directory is written,
// fsynced, renamed over the target, and the directory is fsynced, so a reader (or a reboot) sees
// the whole old file or the whole new one. Read reports an unknown version (ErrVersion), a
// corrupt file (ErrCorrupt) and a missing one (fs.ErrNotExist) as errors the caller logs as
// warnings and then ignores: a snapshot only ever helps, it never stops the agent.
package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"github.com/edgeplane/edgeplane/pkg/atomicfile"
)

// Version is the format this package writes and the only one it reads. Bump it when a field
// changes meaning; adding a field does not need it.
const Version = 1

// FileName is the snapshot's file in the agent's run directory.
const FileName = "snapshot.json"

// DefaultMaxBytes bounds the encoded snapshot: 10,000 Services with 150,000 endpoints take
// about 17 MiB (TestScaleFitsTheDefaultBound).
const DefaultMaxBytes = 64 << 20

// Path is the snapshot's path in runDir.
func Path(runDir string) string { return filepath.Join(runDir, FileName) }

// Errors Read returns for a file that is there but cannot be used.
var (
	ErrVersion = errors.New("snapshot format version not supported")
	ErrCorrupt = errors.New("snapshot corrupt")
	ErrTooBig  = errors.New("snapshot larger than its size bound")
)

// State is the agent's last good state.
type State struct {
	Version int `json:"version"`
	// Written is when the agent wrote it (RFC 3339), for the logs.
	Written string `json:"written"`
	Node    Node   `json:"node"`

	Routes    []Route    `json:"routes"`
	Nodes     []Peer     `json:"nodes"`
	Domains   []Domain   `json:"domains"`
	Frontends []Frontend `json:"frontends"`
	Backends  []Backend  `json:"backends"`
	// PodBackends names the pod behind each backend address of this node's pod CIDR.
	PodBackends []PodBackend `json:"podBackends"`
}

// Node is this node as it registered.
type Node struct {
	Name        string       `json:"name"`
	NodeIP      netip.Addr   `json:"nodeIP"`
	PodCIDR     netip.Prefix `json:"podCIDR"`
	VTEPMAC     string       `json:"vtepMAC"`
	Domain      string       `json:"domain"`
	DomainID    uint32       `json:"domainID"`
	Gateway     netip.Addr   `json:"gateway,omitzero"`
	IsGateway   bool         `json:"isGateway,omitempty"`
	RouteMode   bool         `json:"routeMode,omitempty"` // the node's domain uses encapsulation: route (pod MTU)
	ClusterCIDR netip.Prefix `json:"clusterCIDR"`
}

// Route is a routes_map entry.
type Route struct {
	PodCIDR netip.Prefix `json:"podCIDR"`
	NodeIP  netip.Addr   `json:"nodeIP"`
	Domain  uint32       `json:"domain"`
	Encap   uint8        `json:"encap"`
	Local   bool         `json:"local,omitempty"`
}

// Peer is a nodes_map entry.
type Peer struct {
	NodeIP     netip.Addr `json:"nodeIP"`
	VTEPMAC    string     `json:"vtepMAC"`
	NextHopMAC string     `json:"nextHopMAC,omitempty"`
	Domain     uint32     `json:"domain"`
}

// Domain is a domains_map entry.
type Domain struct {
	ID        uint32 `json:"id"`
	Name      string `json:"name"`
	Reachable bool   `json:"reachable,omitempty"`
	Local     bool   `json:"local,omitempty"`
}

// Frontend is an lb_svc_map entry.
type Frontend struct {
	VIP             netip.Addr `json:"vip"`
	Port            uint16     `json:"port"`
	Proto           uint8      `json:"proto"`
	Scope           uint8      `json:"scope"`
	ID              uint32     `json:"id"`
	Count           uint16     `json:"count"`
	Flags           uint16     `json:"flags"`
	AffinityTimeout uint32     `json:"affinityTimeout,omitempty"`
	Unreachable     uint16     `json:"unreachable,omitempty"`
}

// Backend is an lb_backend_map entry: slot Slot of backend set ID. It is the bulk of a snapshot
// (150,000 of them at 10,000 Services), so it takes 16 bytes, where a netip.Addr alone takes 24.
type Backend struct {
	ID   uint32 `json:"id"`
	Slot uint32 `json:"slot"`
	IP   IPv4   `json:"ip"`
	Port uint16 `json:"port"`
}

// appendJSON appends b as json.Marshal encodes it, without its reflection: encode writes 150,000
// of them at a time.
func (b *Backend) appendJSON(out []byte) []byte {
	out = append(out, `{"id":`...)
	out = strconv.AppendUint(out, uint64(b.ID), 10)
	out = append(out, `,"slot":`...)
	out = strconv.AppendUint(out, uint64(b.Slot), 10)
	out = append(out, `,"ip":"`...)
	out = b.IP.Addr().AppendTo(out)
	out = append(out, `","port":`...)
	out = strconv.AppendUint(out, uint64(b.Port), 10)
	return append(out, '}')
}

// IPv4 is an IPv4 address in 4 bytes, written as its dotted text (the maps hold no other
// backend address).
type IPv4 [4]byte

// IPv4Of is addr, which must be IPv4 (an IPv4-mapped IPv6 address is unmapped).
func IPv4Of(addr netip.Addr) IPv4 { return addr.Unmap().As4() }

// Addr is a as a netip.Addr.
func (a IPv4) Addr() netip.Addr { return netip.AddrFrom4(a) }

func (a IPv4) MarshalText() ([]byte, error) { return a.Addr().AppendTo(nil), nil }

// UnmarshalText reads a dotted IPv4 address; anything else is an error (a corrupt snapshot).
func (a *IPv4) UnmarshalText(text []byte) error {
	addr, err := netip.ParseAddr(string(text))
	if err != nil {
		return err
	}
	if !addr.Is4() {
		return fmt.Errorf("backend address %s is not IPv4", addr)
	}
	*a = addr.As4()
	return nil
}

// PodBackend is a backend address that was a pod of this node.
type PodBackend struct {
	IP        netip.Addr `json:"ip"`
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
}

// Write replaces the snapshot in runDir with s (its Version set to Version), atomically and
// durably; it refuses, leaving the old file, when the encoding passes maxBytes. The encoding is
// streamed to the file an entry at a time (encode): at 10,000 Services the file is ~17 MiB, which
// json.Marshal would hold whole, after growing its buffer by doubling, at every write.
func Write(runDir string, s *State, maxBytes int) error {
	c := *s
	c.Version = Version
	// 0600: it names the cluster's Services and pods; only the agent reads it.
	err := atomicfile.WriteFrom(Path(runDir), 0o600, func(w io.Writer) error {
		return encode(&boundedWriter{w: w, left: maxBytes}, &c)
	})
	if errors.Is(err, ErrTooBig) {
		return fmt.Errorf("writing %s: more than %d bytes: %w", Path(runDir), maxBytes, ErrTooBig)
	}
	if err != nil {
		return fmt.Errorf("writing the snapshot: %w", err)
	}
	return nil
}

// Read returns the snapshot in runDir. A missing file is fs.ErrNotExist; one larger than maxBytes
// ErrTooBig; one that is not a whole snapshot ErrCorrupt; another format ErrVersion.
func Read(runDir string, maxBytes int) (*State, error) {
	f, err := os.Open(Path(runDir))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(maxBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	if len(data) > maxBytes {
		return nil, fmt.Errorf("reading %s: more than %d bytes: %w", f.Name(), maxBytes, ErrTooBig)
	}
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil || head.Version == nil {
		return nil, fmt.Errorf("reading %s: %w: %v", f.Name(), ErrCorrupt, errOr(err, "no version field"))
	}
	if *head.Version != Version {
		return nil, fmt.Errorf("reading %s: version %d, this agent reads %d: %w", f.Name(), *head.Version, Version, ErrVersion)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("reading %s: %w: %v", f.Name(), ErrCorrupt, err)
	}
	if !s.Node.NodeIP.IsValid() || !s.Node.PodCIDR.IsValid() {
		return nil, fmt.Errorf("reading %s: %w: no node IP or pod CIDR", f.Name(), ErrCorrupt)
	}
	return &s, nil
}

func errOr(err error, msg string) any {
	if err != nil {
		return err
	}
	return msg
}
