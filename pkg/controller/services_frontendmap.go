package controller

import (
	"iter"
	"net/netip"

	"github.com/edgeplane/edgeplane/pkg/service"
)

// frontendMap is the ServiceReconciler's programmed frontends by key. An IPv4 frontend (every one
// the model and lb_svc_map have) is keyed in 8 bytes where a service.FrontendKey takes 32: the
// map of 10,000 frontends is ~0.26 MB instead of ~0.66. Any other key is kept as it is.
type frontendMap struct {
	v4    map[frontendKey4]*programmed
	other map[service.FrontendKey]*programmed
}

// frontendKey4 is an IPv4 service.FrontendKey.
type frontendKey4 struct {
	vip   [4]byte
	port  uint16
	proto service.Proto
	scope service.Scope
}

func newFrontendMap() frontendMap {
	return frontendMap{v4: map[frontendKey4]*programmed{}}
}

func key4(k service.FrontendKey) (frontendKey4, bool) {
	if !k.VIP.Is4() {
		return frontendKey4{}, false
	}
	return frontendKey4{vip: k.VIP.As4(), port: k.Port, proto: k.Proto, scope: k.Scope}, true
}

func (k frontendKey4) key() service.FrontendKey {
	return service.FrontendKey{VIP: netip.AddrFrom4(k.vip), Port: k.port, Proto: k.proto, Scope: k.scope}
}

// get is the frontend programmed under k, nil when none is.
func (m *frontendMap) get(k service.FrontendKey) *programmed {
	if k4, ok := key4(k); ok {
		return m.v4[k4]
	}
	return m.other[k]
}

func (m *frontendMap) set(k service.FrontendKey, p *programmed) {
	if k4, ok := key4(k); ok {
		m.v4[k4] = p
		return
	}
	if m.other == nil {
		m.other = map[service.FrontendKey]*programmed{}
	}
	m.other[k] = p
}

func (m *frontendMap) remove(k service.FrontendKey) {
	if k4, ok := key4(k); ok {
		delete(m.v4, k4)
		return
	}
	delete(m.other, k)
}

func (m *frontendMap) len() int { return len(m.v4) + len(m.other) }

// all is every frontend with its key; removing the one visited is allowed, as in a map's range.
func (m *frontendMap) all() iter.Seq2[service.FrontendKey, *programmed] {
	return func(yield func(service.FrontendKey, *programmed) bool) {
		for k, p := range m.v4 {
			if !yield(k.key(), p) {
				return
			}
		}
		for k, p := range m.other {
			if !yield(k, p) {
				return
			}
		}
	}
}
