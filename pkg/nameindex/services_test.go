package nameindex

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestServices(t *testing.T) {
	runDir := t.TempDir()
	if _, err := ReadServices(runDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadServices without an index: %v, want ErrNotExist", err)
	}
	dnsUDP := Frontend{IP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: "udp", Scope: "internal"}
	dnsTCP := Frontend{IP: netip.MustParseAddr("10.96.0.10"), Port: 53, Proto: "tcp", Scope: "internal"}
	nodePort := Frontend{IP: netip.IPv4Unspecified(), Port: 30080, Proto: "tcp", Scope: "external"}
	web := Frontend{IP: netip.MustParseAddr("10.96.0.80"), Port: 80, Proto: "tcp", Scope: "internal"}
	in := []Service{
		{Namespace: "kube-system", Name: "kube-dns", Frontends: []Frontend{dnsUDP, dnsTCP}},
		{Namespace: "default", Name: "web", Frontends: []Frontend{web, nodePort}},
		{Namespace: "default", Name: "headless"},
	}
	if err := WriteServices(runDir, in); err != nil {
		t.Fatal(err)
	}
	got, err := ReadServices(runDir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Service{
		{Namespace: "default", Name: "web", Frontends: []Frontend{nodePort, web}},
		{Namespace: "kube-system", Name: "kube-dns", Frontends: []Frontend{dnsTCP, dnsUDP}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadServices = %v, want %v", got, want)
	}
	if in[0].Frontends[0] != dnsUDP {
		t.Error("WriteServices sorted its caller's slice")
	}
	b, err := os.ReadFile(ServicesPath(runDir))
	if err != nil {
		t.Fatal(err)
	}
	// The documented format (docs/cli.md, Names): an object with the list, addresses as strings.
	if !strings.HasPrefix(string(b), "{\n  \"services\": [\n") ||
		!strings.Contains(string(b), `"ip": "0.0.0.0",`+"\n"+`          "port": 30080,`) {
		t.Errorf("services.json:\n%s", b)
	}
	if got := want[0].FullName() + " " + nodePort.String(); got != "default/web external 0.0.0.0:30080/tcp" {
		t.Errorf("names: %q", got)
	}

	if err := WriteServices(runDir, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadServices(runDir); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("after writing none: %#v, %v", got, err)
	}
	if err := os.WriteFile(ServicesPath(runDir), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadServices(runDir); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a torn file: %v", err)
	}
}
