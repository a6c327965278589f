package k8s

import "time"

// SetRecorderClock gives r the clock now and the wait retry between tries of a write.
func SetRecorderClock(r *Recorder, now func() time.Time, retry time.Duration) {
	r.now, r.retry = now, retry
}

// ObserveProbe feeds r one probe's outcome at t, as its monitor would.
func ObserveProbe(r *Reachability, t time.Time, err error) { r.observe(t, err) }
