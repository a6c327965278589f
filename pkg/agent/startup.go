package agent

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// A cold start's phases are logged with the time since the process started ("sinceStart"): on a
// large cluster (thousands of Nodes, tens of thousands of EndpointSlices) the initial lists, the
// datapath's load and the start-up passes are seconds, and which one a start waited for is what an
// operator (and docs/benchmarks.md, Scale) needs to know.

// processStart is when this process started: its start time in /proc/self/stat (clock ticks
// since boot) against the boot-time clock now, so that the time before main (the runtime's and
// the packages' initialisation) counts; now when they cannot be read.
func processStart(now time.Time) time.Time {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return now
	}
	// The command, in parentheses, may hold spaces: the fields are counted after it, from the
	// third (state); the start time is the 22nd.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return now
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return now
	}
	ticks, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return now
	}
	var boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return now
	}
	since := time.Duration(boot.Nano()) - time.Duration(ticks)*time.Second/userHZ
	if since < 0 || since > time.Hour {
		return now
	}
	return now.Add(-since)
}

// userHZ is the unit of /proc's clock ticks (USER_HZ), 100 on every architecture Linux runs on.
const userHZ = 100

// sinceStart is the time since the process started, as the phases' log lines give it.
func (a *Agent) sinceStart() time.Duration {
	return time.Since(a.started).Round(time.Millisecond)
}

// logInformersSynced logs, for each informer, when it holds its initial list and how many objects
// that was, until ctx is done.
func (a *Agent) logInformersSynced(ctx context.Context, informers map[string]cache.SharedIndexInformer) {
	logger := klog.FromContext(ctx)
	for resource, informer := range informers {
		go func() {
			err := wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
				return informer.HasSynced(), nil
			})
			if err == nil {
				logger.Info("Informer synced", "resource", resource, "objects", len(informer.GetStore().ListKeys()),
					"sinceStart", a.sinceStart())
			}
		}()
	}
}
