package ipmap

import (
	"iter"
	"net/netip"
	"testing"
)

// keyedMap is what Map and PrefixMap have in common, for checkKeys.
type keyedMap[K comparable] interface {
	Get(K) (int, bool)
	Set(K, int)
	Delete(K)
	Len() int
	All() iter.Seq2[K, int]
}

// checkKeys sets each key of keys, then checks that each comes back exactly as it was set, that
// small keys of them were kept in the small map (v4 is its length), and that deleting each
// while walking them all leaves none.
func checkKeys[K comparable](t *testing.T, m keyedMap[K], keys []K, small int, v4 func() int) {
	t.Helper()
	for i, k := range keys {
		m.Set(k, i)
	}
	if m.Len() != len(keys) || v4() != small {
		t.Fatalf("len %d (v4 %d); want %d (%d)", m.Len(), v4(), len(keys), small)
	}
	for i, k := range keys {
		if v, ok := m.Get(k); !ok || v != i {
			t.Errorf("Get(%v) = %d, %v; want %d", k, v, ok, i)
		}
	}
	seen := map[K]int{}
	for k, v := range m.All() {
		seen[k] = v
		m.Delete(k)
	}
	for i, k := range keys {
		if v, ok := seen[k]; !ok || v != i {
			t.Errorf("All gave %v = %d, %v; want %d", k, v, ok, i)
		}
	}
	if m.Len() != 0 {
		t.Errorf("%d keys left after deleting each", m.Len())
	}
	if _, ok := m.Get(keys[0]); ok {
		t.Error("a deleted key is still there")
	}
}

// Every kind of address comes back exactly as it was set; IPv4 ones are kept in the small map.
func TestMapKeys(t *testing.T) {
	var m Map[int]
	checkKeys[netip.Addr](t, &m, []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("fd00::1"),
		netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("fe80::1%eth0"), {},
	}, 2, func() int { return len(m.v4) })
	n := NewMap[bool](4)
	n.Set(netip.MustParseAddr("192.0.2.1"), true)
	n.Clear()
	if n.Len() != 0 {
		t.Error("Clear left keys")
	}
}

// Every kind of prefix comes back exactly as it was set, an IPv4 one not masked too.
func TestPrefixMapKeys(t *testing.T) {
	var m PrefixMap[int]
	checkKeys[netip.Prefix](t, &m, []netip.Prefix{
		netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.244.1.0/24"),
		netip.PrefixFrom(netip.MustParseAddr("10.244.1.7"), 24), // not masked: a key of its own
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.0.0.1/32"),
		netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("::ffff:10.0.0.0/104"), {},
	}, 5, func() int { return len(m.v4) })
}
