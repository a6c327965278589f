package controller

import "sync/atomic"

// nodeWork counts what Node events cost the ServiceReconciler, for the tests that hold it
// proportional to what changed (services_scale_test.go): the Services a Node event looked at,
// and the Nodes read into the node view, in how many builds of the whole view.
type nodeWork struct {
	services   atomic.Int64 // Services looked at (and queued or not) because of a Node event
	viewBuilds atomic.Int64 // builds of the whole node view
	viewNodes  atomic.Int64 // Nodes read into the node view, whole or in part
}
