package ipmap

import (
	"net/netip"
	"testing"
)

// Every kind of key comes back exactly as it was set, and IPv4 ones are kept in the small map.
func TestMapKeys(t *testing.T) {
	keys := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("fd00::1"),
		netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("fe80::1%eth0"), {},
	}
	var m Map[int]
	for i, k := range keys {
		m.Set(k, i)
	}
	if m.Len() != len(keys) || len(m.v4) != 2 {
		t.Fatalf("len %d (v4 %d); want %d (2)", m.Len(), len(m.v4), len(keys))
	}
	for i, k := range keys {
		if v, ok := m.Get(k); !ok || v != i {
			t.Errorf("Get(%v) = %d, %v; want %d", k, v, ok, i)
		}
	}
	seen := map[netip.Addr]int{}
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
	n := NewMap[bool](4)
	n.Set(keys[0], true)
	n.Clear()
	if n.Len() != 0 {
		t.Error("Clear left keys")
	}
}

func TestPrefixMapKeys(t *testing.T) {
	keys := []netip.Prefix{
		netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.244.1.0/24"),
		netip.PrefixFrom(netip.MustParseAddr("10.244.1.7"), 24), // not masked: a key of its own
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.0.0.1/32"),
		netip.MustParsePrefix("fd00::/64"), netip.MustParsePrefix("::ffff:10.0.0.0/104"), {},
	}
	var m PrefixMap[int]
	for i, k := range keys {
		m.Set(k, i)
	}
	if m.Len() != len(keys) || len(m.v4) != 5 {
		t.Fatalf("len %d (v4 %d); want %d (5)", m.Len(), len(m.v4), len(keys))
	}
	for i, k := range keys {
		if v, ok := m.Get(k); !ok || v != i {
			t.Errorf("Get(%v) = %d, %v; want %d", k, v, ok, i)
		}
	}
	seen := map[netip.Prefix]int{}
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
}
