// Package domainid computes a network domain's ID in the datapath (the key of domains_map, the
// domain of routes_map and nodes_map entries) from its name: every node computes the same ID for
// the same name on its own, so the IDs need no allocation and no agreement between nodes. It is a
// leaf so that the agent's model (pkg/domain) and the map's readers (edgeplanectl through
// pkg/maps/domainsmap) share it without linking each other.
package domainid

import "hash/fnv"

// Default is the ID of the default domain, the nodes in no pool.
const Default uint32 = 0

// Of is the ID of the domain named name: Default for "", else the FNV-1a hash of the name, never
// Default (a name that hashes to 0 gets 1). Two names may hash alike: whoever accepts names must
// refuse such a pair (pkg/domain does). The model's name of the default domain ("default",
// pkg/domain.Default) is the model's to map to Default (pkg/domain.ID).
func Of(name string) uint32 {
	if name == "" {
		return Default
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	if id := h.Sum32(); id != Default {
		return id
	}
	return 1
}
