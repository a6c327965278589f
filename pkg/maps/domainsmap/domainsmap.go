// Package domainsmap reads and writes domains_map (bpf/lib/domains.h): the network domains this node
// knows, by ID, with whether its pods may reach them. The programs consult it only for peers
// outside the node's own domain (node_cfg_map's Domain); a domain missing from the map is
// unreachable. The agent writes it from node pools and the connectivity table.
package domainsmap

import (
	"bytes"
	"fmt"
	"hash/fnv"

	"github.com/edgeplane/edgeplane/pkg/maps/internal/typed"
)

// MapName is the map's name in the objects and under <root>/maps.
const MapName = "domains_map"

// NameLen is the size of the name field, NUL padding included.
const NameLen = 64

// Flags (enum domain_flags).
const (
	FlagReachable uint32 = 1 << 0 // this node's own domain, or joined to it by a private line
	FlagLocal     uint32 = 1 << 1 // this node's own domain
)

// DefaultID is the ID of the default domain, the nodes in no pool.
const DefaultID uint32 = 0

// ID is the domain ID every node computes for name: DefaultID for "" (no pool), else the FNV-1a
// hash of the name, never DefaultID. Callers must refuse two names with the same ID. The agent's
// model computes it itself (pkg/domain.ID, which also gives its "default" domain DefaultID);
// this one is for readers of the map that do not link the model (edgeplanectl), and
// pkg/controller/maptables tests that the two agree.
func ID(name string) uint32 {
	if name == "" {
		return DefaultID
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	if id := h.Sum32(); id != DefaultID {
		return id
	}
	return 1
}

// Domain mirrors struct domain.
type Domain struct {
	Flags uint32
	Name  [NameLen]byte
}

// New builds an entry; names longer than NameLen-1 bytes are an error.
func New(name string, flags uint32) (Domain, error) {
	d := Domain{Flags: flags}
	if len(name) >= NameLen {
		return d, fmt.Errorf("domain name %q is longer than %d bytes", name, NameLen-1)
	}
	copy(d.Name[:], name)
	return d, nil
}

// NameString is the stored name.
func (d Domain) NameString() string {
	n, _, _ := bytes.Cut(d.Name[:], []byte{0})
	return string(n)
}

// Reachable reports FlagReachable.
func (d Domain) Reachable() bool { return d.Flags&FlagReachable != 0 }

// Local reports FlagLocal.
func (d Domain) Local() bool { return d.Flags&FlagLocal != 0 }

func (d Domain) String() string {
	s := fmt.Sprintf("name=%s reachable=%t", d.NameString(), d.Reachable())
	if d.Local() {
		s += " local"
	}
	return s
}

// Map is an open domains_map; its owner closes it.
type Map struct {
	m *typed.Map[uint32, Domain]
}

// Open opens the map pinned under root.
func Open(root string) (*Map, error) {
	m, err := typed.Open[uint32, Domain](root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// OpenReadOnly opens the map pinned under root for reading (edgeplanectl).
func OpenReadOnly(root string) (*Map, error) {
	m, err := typed.OpenReadOnly[uint32, Domain](root, MapName)
	if err != nil {
		return nil, err
	}
	return &Map{m}, nil
}

// Close releases the handle; the pinned map lives on.
func (m *Map) Close() error { return m.m.Close() }

// Upsert creates or replaces the domain id.
func (m *Map) Upsert(id uint32, d Domain) error { return m.m.Put(id, d) }

// Lookup returns the domain id; a missing one wraps ebpf.ErrKeyNotExist.
func (m *Map) Lookup(id uint32) (Domain, error) { return m.m.Get(id) }

// Delete removes the domain id; a missing domain is not an error.
func (m *Map) Delete(id uint32) error { return m.m.Delete(id) }

// Iterate calls fn for each domain until fn returns false.
func (m *Map) Iterate(fn func(uint32, Domain) bool) error { return m.m.Iterate(fn) }

// List returns every domain by ID.
func (m *Map) List() (map[uint32]Domain, error) {
	out := map[uint32]Domain{}
	err := m.Iterate(func(id uint32, d Domain) bool { out[id] = d; return true })
	return out, err
}
