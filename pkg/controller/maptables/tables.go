// Package maptables is the controller's tables over the BPF maps: each type here implements one of
// pkg/controller's table interfaces (RouteTable, NodeTable, EndpointTable, DomainTable,
// FrontendTable, BackendTable, AffinityTable) on the pinned map of pkg/maps that mirrors it. Keys
// and values are converted here, once, between the reconcilers' neutral types (netip addresses,
// the models' own enums and flags) and the maps' C layouts (maps.IPv4, network-order ports); the
// reconcilers never learn the BPF layout and are tested with in-memory tables instead of these.
//
// Open opens every map the reconcilers write; Tables hands them out behind the interfaces, and
// Close releases the handles (the pins stay for the programs and the next agent).
package maptables

import (
	"errors"
	"io"
	"slices"

	"github.com/edgeplane/edgeplane/pkg/controller"
	"github.com/edgeplane/edgeplane/pkg/maps/domainsmap"
	"github.com/edgeplane/edgeplane/pkg/maps/endpoints"
	"github.com/edgeplane/edgeplane/pkg/maps/lb"
	"github.com/edgeplane/edgeplane/pkg/maps/nodes"
	"github.com/edgeplane/edgeplane/pkg/maps/routes"
)

// Tables are the opened maps the reconcilers write.
type Tables struct {
	routes    *routes.Map
	nodes     *nodes.Map
	endpoints *endpoints.Map
	domains   *domainsmap.Map
	svc       *lb.SvcMap
	backend   *lb.BackendMap
	ct        *lb.CTMap
	affinity  *lb.AffinityMap
	opened    []io.Closer // what Close releases, in the order Open opened it
}

// Open opens the maps pinned under root; on error it closes what it opened.
func Open(root string) (*Tables, error) {
	t := &Tables{}
	err := errors.Join(
		open(t, &t.routes, routes.Open, root),
		open(t, &t.nodes, nodes.Open, root),
		open(t, &t.endpoints, endpoints.Open, root),
		open(t, &t.domains, domainsmap.Open, root),
		open(t, &t.svc, lb.OpenSvc, root),
		open(t, &t.backend, lb.OpenBackend, root),
		open(t, &t.ct, lb.OpenCT, root),
		open(t, &t.affinity, lb.OpenAffinity, root),
	)
	if err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// open opens one map into *m and records it for Close.
func open[M io.Closer](t *Tables, m *M, openMap func(root string) (M, error), root string) error {
	v, err := openMap(root)
	if err != nil {
		return err
	}
	*m = v
	t.opened = append(t.opened, v)
	return nil
}

// Close releases every handle Open got; the pinned maps live on.
func (t *Tables) Close() error {
	var errs []error
	for _, m := range slices.Backward(t.opened) {
		errs = append(errs, m.Close())
	}
	t.opened = nil
	return errors.Join(errs...)
}

// Routes is routes_map (the NodeReconciler's).
func (t *Tables) Routes() controller.RouteTable { return routeTable{t.routes} }

// Nodes is nodes_map (the NodeReconciler's).
func (t *Tables) Nodes() controller.NodeTable { return nodeTable{t.nodes} }

// Endpoints is endpoints_map as the pod garbage collector sees it.
func (t *Tables) Endpoints() controller.EndpointTable { return endpointTable{t.endpoints} }

// Domains is domains_map (the NodeReconciler's).
func (t *Tables) Domains() controller.DomainTable { return domainTable{t.domains} }

// Frontends is lb_svc_map (the ServiceReconciler's).
func (t *Tables) Frontends() controller.FrontendTable { return frontendTable{t.svc} }

// Backends is lb_backend_map (the ServiceReconciler's); it also writes whole sets
// (controller.BackendSetWriter) and walks its slots (controller.BackendWalker).
func (t *Tables) Backends() controller.BackendTable { return backendTable{t.backend} }

// Affinity is lb_affinity_map (the ServiceReconciler's).
func (t *Tables) Affinity() controller.AffinityTable { return affinityTable{t.affinity} }

// Conntrack and AffinityMap are lb_ct_map and lb_affinity_map as they are, for the agent's
// connection tracking garbage collector, which reads the programs' entries in their own layout.
func (t *Tables) Conntrack() *lb.CTMap { return t.ct }

// AffinityMap: see Conntrack.
func (t *Tables) AffinityMap() *lb.AffinityMap { return t.affinity }
