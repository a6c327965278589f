package datapath

import (
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// TypeByName returns the named type from the committed objects' BTF (the first object that has
// it), for layout tests of types no map declares, such as the ring buffer's struct monitor_event.
func TypeByName(name string) (btf.Type, error) {
	specs, order, err := objectSpecs()
	if err != nil {
		return nil, err
	}
	for _, obj := range order {
		if specs[obj].Types == nil {
			continue
		}
		if typ, err := specs[obj].Types.AnyTypeByName(name); err == nil {
			return typ, nil
		}
	}
	return nil, fmt.Errorf("no type %s in the objects' BTF", name)
}
