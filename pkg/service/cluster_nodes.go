package service

import "net/netip"

// The node view changed one node at a time, for a controller that follows Node events (a
// cluster of 5,000 nodes is not rebuilt for each): Place and Remove for the other nodes;
// this node itself is placed by NewCluster, since its domain decides what every other is.

// Place sets where the node called name is: its pool ("" for none) and, when unreachable, its
// pod CIDR (SetUnreachable). It reports whether the set of unreachable nodes changed (a node
// joined or left it). name must not be Local's.
func (c *Cluster) Place(name, pool string, unreachable bool, podCIDR netip.Prefix) (unreachableChanged bool) {
	if pool != "" {
		c.pools[name] = pool
	} else {
		delete(c.pools, name)
	}
	_, was := c.unreachable[name]
	if unreachable {
		c.SetUnreachable(name, podCIDR)
	} else {
		delete(c.unreachable, name)
	}
	return was != unreachable
}

// Remove forgets the node called name (deleted); it reports whether it was unreachable.
func (c *Cluster) Remove(name string) (unreachableChanged bool) {
	delete(c.pools, name)
	_, was := c.unreachable[name]
	delete(c.unreachable, name)
	return was
}

// UnreachableCount is how many nodes SetUnreachable marked.
func (c *Cluster) UnreachableCount() int { return len(c.unreachable) }

// SameUnreachable reports whether both views mark the same nodes unreachable (by name).
func (c *Cluster) SameUnreachable(o *Cluster) bool {
	if len(c.unreachable) != len(o.unreachable) {
		return false
	}
	for name := range c.unreachable {
		if _, ok := o.unreachable[name]; !ok {
			return false
		}
	}
	return true
}
