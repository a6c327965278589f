package procstat

import "testing"

// Sum adds the fields asked for on each "cpuN" line: the benchmark's busy time (user, nice,
// system, irq, softirq) and udprate's time not running anything (idle, iowait, steal).
func TestSum(t *testing.T) {
	stat := `cpu  300 20 100 5000 40 6 70 900 0 0
cpu0 100 10 50 2500 20 3 30 450 0 0
cpu1 200 10 50 2400 25 3 40 7 0 0
intr 12345
ctxt 678`
	busy, err := Sum(stat, User, Nice, System, IRQ, SoftIRQ)
	if err != nil {
		t.Fatal(err)
	}
	if len(busy) != 2 || busy[0] != 100+10+50+3+30 || busy[1] != 200+10+50+3+40 {
		t.Errorf("busy ticks %v", busy)
	}
	notRun, err := Sum(stat, Idle, IOWait, Steal)
	if err != nil {
		t.Fatal(err)
	}
	if len(notRun) != 2 || notRun[0] != 2500+20+450 || notRun[1] != 2400+25+7 {
		t.Errorf("not-running ticks %v", notRun)
	}
	for _, c := range []struct {
		what, stat string
		fields     []Field
	}{
		{"no per-CPU line", "cpu  1 2 3 4 5 6 7\nintr 1", []Field{User, Nice, System, IRQ, SoftIRQ}},
		{"no per-CPU line", "cpu  1 2 3 4 5 6 7 8\nintr 1", []Field{Idle, IOWait, Steal}},
		{"no per-CPU line with steal time", "cpu0 1 2 3 4 5 6 7", []Field{Idle, IOWait, Steal}},
		{"a field that is not a number", "cpu0 1 2 3 x 5 6 7 8", []Field{Idle, IOWait, Steal}},
	} {
		if _, err := Sum(c.stat, c.fields...); err == nil {
			t.Errorf("%s: no error", c.what)
		}
	}
}
