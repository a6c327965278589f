package dropreason

import "testing"

func TestString(t *testing.T) {
	for r, want := range map[Reason]string{
		Forwarded:         "FORWARDED",
		DomainUnreachable: "DOMAIN_UNREACHABLE",
		NATFailed:         "NAT_FAILED",
		NoServiceBackend:  "NO_SERVICE_BACKEND",
		TTLExceeded:       "TTL_EXCEEDED",
		Max:               "UNKNOWN_21",
		200:               "UNKNOWN_200",
	} {
		if got := r.String(); got != want {
			t.Errorf("%d: %q, want %q", r, got, want)
		}
	}
}
