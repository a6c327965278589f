package service

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgeplane/edgeplane/pkg/domain"
)

// An empty pool label value means "no pool" for Services too (docs/domains.md): the node is in
// no pool for the pool topology and listens on node ports as nodes in no pool do.
func TestEmptyPoolLabelIsNoPool(t *testing.T) {
	nodes := []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "self", Labels: map[string]string{domain.DefaultPoolLabel: ""}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "peer", Labels: map[string]string{domain.DefaultPoolLabel: ""}}},
	}
	c := NewCluster("self", nodes, domain.DefaultPoolLabel)
	if c.Local.Pool != "" || c.PoolOf("peer") != "" {
		t.Errorf("empty pool values: local pool %q, peer's %q; want none", c.Local.Pool, c.PoolOf("peer"))
	}
	if !c.Equal(NewCluster("self", []*corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "self"}}, {ObjectMeta: metav1.ObjectMeta{Name: "peer"}}}, domain.DefaultPoolLabel)) {
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
