package controller

import (
	"errors"
	"net"
	"net/netip"
	"sync"
)

// memTable is an in-memory map table standing in for a pinned BPF map.
type memTable[K comparable, V any] struct {
	mu      sync.Mutex
	entries map[K]V
	failing error // returned by writes when set
}

func newMemTable[K comparable, V any]() *memTable[K, V] {
	return &memTable[K, V]{entries: map[K]V{}}
}

func (m *memTable[K, V]) Upsert(k K, v V) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing != nil {
		return m.failing
	}
	m.entries[k] = v
	return nil
}

func (m *memTable[K, V]) Delete(k K) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing != nil {
		return m.failing
	}
	delete(m.entries, k)
	return nil
}

func (m *memTable[K, V]) List() (map[K]V, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[K]V, len(m.entries))
	for k, v := range m.entries {
		out[k] = v
	}
	return out, nil
}

type staticNextHop map[netip.Addr]net.HardwareAddr

func (s staticNextHop) NextHop(ip netip.Addr) (net.HardwareAddr, error) {
	if mac, ok := s[ip]; ok {
		return mac, nil
	}
	return nil, errors.New("no neighbour")
}

// fakeLinks is a host with some interfaces.
type fakeLinks struct {
	mu     sync.Mutex
	byIdx  map[int]string
	failed error
}

func (f *fakeLinks) NameOf(ifindex int) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name, ok := f.byIdx[ifindex]
	return name, ok, f.failed
}

func (f *fakeLinks) Exists(name string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.byIdx {
		if n == name {
			return true, nil
		}
	}
	return false, f.failed
}

type fakePins struct {
	mu    sync.Mutex
	veths map[string]bool
}

func (f *fakePins) List() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for v := range f.veths {
		out = append(out, v)
	}
	return out, nil
}

func (f *fakePins) Remove(veth string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.veths, veth)
	return nil
}
