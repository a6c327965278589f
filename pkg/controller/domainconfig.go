package controller

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/pkg/k8s"
	"github.com/edgeplane/edgeplane/pkg/k8s/api"
)

// DomainConfigController is the name of the domain configuration watcher in metrics.
const DomainConfigController = "domain-config"

// ReasonInvalidDomainConfig is the reason of the Warning event recorded on a domain ConfigMap that
// cannot be used.
const ReasonInvalidDomainConfig = "InvalidDomainConfig"

// DomainConfig follows the domain ConfigMap (pkg/domain): Model is always the last valid
// configuration, the default model while there is no ConfigMap. A ConfigMap that does not parse
// gets a Warning event and changes nothing.
type DomainConfig struct {
	name     string
	recorder k8s.EventRecorder
	metrics  Metrics
	synced   cache.InformerSynced
	store    cache.Store

	model atomic.Pointer[domain.Model]

	mu        sync.Mutex
	listeners []func()
	lastErr   string
	invalid   *api.ConfigMap // the ConfigMap lastErr is about
}

// NewDomainConfig registers on an informer of the ConfigMap's namespace (the agent narrows it to
// the one name); name is the ConfigMap's name.
func NewDomainConfig(informer k8s.Informer, name string, recorder k8s.EventRecorder, metrics Metrics) (*DomainConfig, error) {
	d := &DomainConfig{name: name, recorder: recorder, metrics: metrics, store: informer.GetStore()}
	d.model.Store(domain.DefaultModel())
	reg, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.update(obj, false) },
		UpdateFunc: func(_, obj any) { d.update(obj, false) },
		DeleteFunc: func(obj any) { d.update(obj, true) },
	})
	if err != nil {
		return nil, fmt.Errorf("adding configmap event handler: %w", err)
	}
	// Synced once this handler has seen the initial list, not merely once the informer's store
	// has it: Model must be the ConfigMap's by then.
	d.synced = reg.HasSynced
	return d, nil
}

// Model is the configuration in force.
func (d *DomainConfig) Model() *domain.Model { return d.model.Load() }

// HasSynced reports whether the ConfigMap (or its absence) has been seen.
func (d *DomainConfig) HasSynced() bool { return d.synced() }

// OnChange registers fn, called (from the informer's goroutine) after the model changed.
func (d *DomainConfig) OnChange(fn func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.listeners = append(d.listeners, fn)
}

func (d *DomainConfig) update(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	cm, ok := obj.(*api.ConfigMap)
	if !ok || cm.Name != d.name {
		return
	}
	start := time.Now()
	logger := klog.Background().WithValues("configmap", klog.KObj(cm))
	var (
		m   *domain.Model
		err error
	)
	if deleted {
		m = domain.DefaultModel()
		logger.Info("Domain ConfigMap deleted: every pool is its own domain, all pairs public")
	} else {
		m, err = domain.Parse([]byte(cm.Data[domain.ConfigKey]))
	}
	observe(d.metrics, DomainConfigController, start, err)
	d.mu.Lock()
	if err != nil {
		d.invalid = cm
		if d.lastErr != err.Error() {
			d.lastErr = err.Error()
			logger.Error(err, "Ignoring the domain configuration; keeping the last valid one")
			d.recordLocked()
		}
		d.mu.Unlock()
		return
	}
	d.lastErr, d.invalid = "", nil
	listeners := append([]func(){}, d.listeners...)
	d.mu.Unlock()
	if d.model.Swap(m).Equal(m) {
		return
	}
	logger.Info("Domain configuration changed", "poolLabel", m.PoolLabel(), "default", m.DefaultConnectivity(), "domains", m.Configured(),
		"routeDomains", m.RouteDomains())
	for _, fn := range listeners {
		fn()
	}
}

func (d *DomainConfig) recordLocked() {
	if d.recorder != nil && d.invalid != nil {
		d.recorder.Eventf(d.invalid, api.EventTypeWarning, ReasonInvalidDomainConfig,
			"edgeplane keeps its last valid domain configuration: %s", d.lastErr)
	}
}

// ReportAgain records the event about the ConfigMap's current problem, if it has one, again: the
// recorder's events now reach the cluster (this agent became the reporter) and the one recorded
// before may not have.
func (d *DomainConfig) ReportAgain() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastErr != "" {
		d.recordLocked()
	}
}

// InEffect describes the configuration in force and where it came from, for the start-up log:
// the ConfigMap's resourceVersion, or that it was not found and the defaults apply. Call it after
// the informer synced.
func (d *DomainConfig) InEffect() (msg string, keysAndValues []any) {
	var cm *api.ConfigMap
	for _, obj := range d.store.List() {
		if c, ok := obj.(*api.ConfigMap); ok && c.Name == d.name {
			cm = c
		}
	}
	d.mu.Lock()
	lastErr := d.lastErr
	d.mu.Unlock()
	m := d.Model()
	switch {
	case cm == nil:
		return "Domain ConfigMap not found: every pool is its own domain, all pairs public (default)", nil
	case lastErr != "":
		return "Domain ConfigMap is invalid: every pool is its own domain, all pairs public (default) until it is fixed",
			[]any{"resourceVersion", cm.ResourceVersion, "err", lastErr}
	default:
		return "Domain configuration in effect", []any{"resourceVersion", cm.ResourceVersion,
			"poolLabel", m.PoolLabel(), "default", m.DefaultConnectivity(), "domains", m.Configured(), "routeDomains", m.RouteDomains()}
	}
}

// WaitForSync blocks until the ConfigMap informer synced or ctx is done.
func (d *DomainConfig) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), d.synced)
}
