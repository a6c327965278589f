package maptables

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// TestServiceValuesMatchLB: every value of the Service model is the number pkg/maps/lb (checked
// against lb.h by its own test) gives the datapath's, converts to it and back, and reads the same
// (edgeplanectl prints lb's names, the name index the model's).
func TestServiceValuesMatchLB(t *testing.T) {
	protos := map[service.Proto]lb.Proto{service.ProtoTCP: lb.ProtoTCP, service.ProtoUDP: lb.ProtoUDP, service.ProtoSCTP: lb.ProtoSCTP}
	if len(protos) != len(service.Protos) {
		t.Errorf("service.Protos = %v; the test knows %d", service.Protos, len(protos))
	}
	for _, p := range service.Protos {
		want, ok := protos[p]
		if !ok {
			t.Errorf("service.Protos holds %v, which the test does not know", p)
		}
		if got := lbProto(p); got != want || serviceProto(got) != p || p.String() != want.String() {
			t.Errorf("service %v (%d) -> lb %v (%d), want lb %v (%d)", p, uint8(p), got, uint8(got), want, uint8(want))
		}
	}
	for p, want := range map[service.Scope]lb.Scope{service.ScopeInternal: lb.ScopeInternal, service.ScopeExternal: lb.ScopeExternal} {
		if got := lbScope(p); got != want || serviceScope(got) != p || p.String() != want.String() {
			t.Errorf("service %v (%d) -> lb %v (%d), want lb %v (%d)", p, uint8(p), got, uint8(got), want, uint8(want))
		}
	}
	flags := map[service.Flags]uint16{
		service.FlagAffinity: lb.FlagAffinity, service.FlagNodePort: lb.FlagNodePort, service.FlagClosed: lb.FlagClosed,
		service.FlagLocal: lb.FlagLocal, service.FlagExternalIP: lb.FlagExternalIP,
	}
	if len(flags) != len(lb.FlagNames) || !slices.Equal(service.FlagNames, lb.FlagNames) {
		t.Errorf("flag names: service %v, lb %v", service.FlagNames, lb.FlagNames)
	}
	for f, want := range flags {
		if got := lbFlags(f); got != want || serviceFlags(got) != f {
			t.Errorf("service flag %v (%#x) -> lb %#x, want %#x", f, uint16(f), got, want)
		}
	}
	for f := range uint16(1 << (len(lb.FlagNames) + 1)) {
		if got, want := serviceFlags(f).String(), lb.FlagString(f); got != want {
			t.Errorf("flags %#x read %q in the model, %q in lb", f, got, want)
		}
	}
	if service.MaxBackends != lb.MaxBackends {
		t.Errorf("service.MaxBackends = %d, lb.MaxBackends = %d", service.MaxBackends, lb.MaxBackends)
	}
}

// TestDomainIDsMatchMap: the model's domain IDs (pkg/domain.ID, the keys the reconcilers write)
// are the ones the domains_map package computes for edgeplanectl.
func TestDomainIDsMatchMap(t *testing.T) {
	if domain.DefaultID != domainsmap.DefaultID || domain.ID(domain.Default) != domainsmap.DefaultID || domain.ID("") != domainsmap.DefaultID {
		t.Errorf("the default domain: model %d (%q: %d), map %d", domain.DefaultID, domain.Default, domain.ID(domain.Default), domainsmap.DefaultID)
	}
	names := []string{"cloud", "site-a", "site-b", "pool-1", "a", "Default", strings.Repeat("x", domainsmap.NameLen-1)}
	for i := range 1000 {
		names = append(names, fmt.Sprintf("pool-%d", i))
	}
	for _, name := range names {
		if got, want := domain.ID(name), domainsmap.ID(name); got != want {
			t.Errorf("domain %q: model ID %#x, map ID %#x", name, got, want)
		}
	}
}
