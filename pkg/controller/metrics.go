package controller

import (
	"time"

	"k8s.io/client-go/util/workqueue"
)

// Names of the reconcilers, as their workqueues and metrics call them.
const (
	NodesController = "nodes"
	PodGCController = "endpoints-gc"
	// ConntrackGCController is the agent's sweep of the service connection tracking maps
	// (one "reconcile" per bounded pass); ServicesController is in services.go.
	ConntrackGCController = "conntrack-gc"
)

// Metrics receives what the reconcilers measure: their workqueues' metrics and the outcome and
// duration of every reconcile. It is optional; without it nothing is recorded.
type Metrics interface {
	workqueue.MetricsProvider
	ObserveReconcile(controller string, took time.Duration, err error)
}

// queueMetrics is the provider a workqueue gets: nil keeps client-go's default (no metrics).
func queueMetrics(m Metrics) workqueue.MetricsProvider {
	if m == nil {
		return nil
	}
	return m
}

// observe records one reconcile that started at start and ended with err.
func observe(m Metrics, controller string, start time.Time, err error) {
	if m != nil {
		m.ObserveReconcile(controller, time.Since(start), err)
	}
}
