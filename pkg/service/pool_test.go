package service

import (
	"testing"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"k8s.io/apimachinery/pkg/labels"
)

// An empty pool label value means "no pool" for Services too (docs/domains.md): the node is in
// no pool for the pool topology and listens on node ports as nodes in no pool do.
func TestEmptyPoolLabelIsNoPool(t *testing.T) {
	nodes := nodeLabels(map[string]labels.Set{
		"self": {domain.DefaultPoolLabel: ""},
		"peer": {domain.DefaultPoolLabel: ""},
	})
	c := NewCluster("self", nodes, domain.DefaultPoolLabel)
	if c.Local.Pool != "" || c.PoolOf("peer") != "" {
		t.Errorf("empty pool values: local pool %q, peer's %q; want none", c.Local.Pool, c.PoolOf("peer"))
	}
	if !c.Equal(NewCluster("self", nodeLabels(map[string]labels.Set{"self": nil, "peer": nil}), domain.DefaultPoolLabel)) {
		t.Error("empty pool values place the nodes differently from no label")
	}
	listen, err := ParseListen("pool-a,-pool-b")
	if err != nil {
		t.Fatal(err)
	}
	if !listen.Listening(c.Local.Pool) {
		t.Error("a node with an empty pool value does not listen on a node port restricted to pool-a, as nodes in no pool do")
	}
}
