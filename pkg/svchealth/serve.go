package svchealth

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"k8s.io/klog/v2"
)

// RetryPeriod is how often Serve tries again a port someone else holds.
const RetryPeriod = 5 * time.Second

// Serve serves handler on addr until ctx is done. A port it cannot bind (kube-proxy still running
// on a node being moved to edgeplane, say) is no start-up failure: it is logged, naming what
// (e.g. "the proxy health server") and the flag that sets addr, and tried again every RetryPeriod;
// the Services' datapath does not depend on these servers.
func Serve(ctx context.Context, addr string, handler http.Handler, what, flag string) {
	logger := klog.FromContext(ctx)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
			stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
			logger.V(2).Info("Serving "+what, "addr", addr)
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "Stopped serving "+what, "addr", addr)
			}
			stop()
		} else {
			logger.Error(err, "Cannot serve "+what+" ("+flag+"); retrying", "addr", addr, "retry", RetryPeriod)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(RetryPeriod):
		}
	}
}
