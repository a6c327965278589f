package maptables

import (
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/service"
)

// The Service model's values as pkg/maps/lb holds them. The model gives each the number the
// datapath uses (values_test.go checks every one against lb's, which lb's own test checks against
// lb.h), so the conversions are plain; they are the only place the two meet.

func lbProto(p service.Proto) lb.Proto      { return lb.Proto(p) }
func serviceProto(p lb.Proto) service.Proto { return service.Proto(p) }
func lbScope(s service.Scope) lb.Scope      { return lb.Scope(s) }
func serviceScope(s lb.Scope) service.Scope { return service.Scope(s) }
func lbFlags(f service.Flags) uint16        { return uint16(f) }
func serviceFlags(f uint16) service.Flags   { return service.Flags(f) }
