package cninode

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{
		NodeName:    "node-1",
		NodeIP:      netip.MustParseAddr("192.168.1.1"),
		PodCIDR:     netip.MustParsePrefix("10.244.1.0/24"),
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		MTU:         1450,
		BPFFSRoot:   "/sys/fs/bpf/edgeplane",
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"pod CIDR equal to the cluster CIDR", func(c *Config) { c.PodCIDR = c.ClusterCIDR }, ""},
		{"smallest MTU", func(c *Config) { c.MTU = 576 }, ""},
		{"largest MTU", func(c *Config) { c.MTU = 65535 }, ""},
		{"no node name", func(c *Config) { c.NodeName = "" }, "nodeName"},
		{"no pod CIDR", func(c *Config) { c.PodCIDR = netip.Prefix{} }, "podCIDR"},
		{"IPv6 pod CIDR", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("fd00:10:244:1::/64") }, "not an IPv4 prefix"},
		{"no cluster CIDR", func(c *Config) { c.ClusterCIDR = netip.Prefix{} }, "not inside clusterCIDR"},
		{"pod CIDR outside the cluster CIDR", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("10.245.1.0/24") }, "not inside clusterCIDR"},
		{"pod CIDR wider than the cluster CIDR", func(c *Config) { c.PodCIDR = netip.MustParsePrefix("10.0.0.0/8") }, "not inside clusterCIDR"},
		{"MTU below 576", func(c *Config) { c.MTU = 575 }, "mtu 575"},
		{"MTU missing", func(c *Config) { c.MTU = 0 }, "mtu 0"},
		{"MTU above 65535", func(c *Config) { c.MTU = 65536 }, "mtu 65536"},
		{"no bpffs root", func(c *Config) { c.BPFFSRoot = "" }, "bpffsRoot"},
		{"BIG TCP", func(c *Config) { c.GSOIPv4MaxSize = 196608 }, ""},
		{"BIG TCP at the kernel's largest", func(c *Config) { c.GSOIPv4MaxSize = 524280 }, ""},
		{"GSO size below 64 KiB", func(c *Config) { c.GSOIPv4MaxSize = 65535 }, "gsoIPv4MaxSize 65535"},
		{"GSO size above the kernel's", func(c *Config) { c.GSOIPv4MaxSize = 524281 }, "gsoIPv4MaxSize 524281"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestWriteRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "edgeplane") // Write creates it
	c := validConfig()
	if err := Write(dir, &c); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if *got != c {
		t.Fatalf("read back %+v, want %+v", *got, c)
	}

	// A second Write replaces the file by rename: a reader holding the old file keeps reading
	// the old content, nothing else is left in the directory, and the new content is complete.
	old, err := os.Open(Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	before, _ := os.Stat(Path(dir))
	c.MTU = 1400
	c.NodeName = "node-1-renamed"
	if err := Write(dir, &c); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(Path(dir))
	if os.SameFile(before, after) {
		t.Error("Write rewrote the file in place instead of replacing it")
	}
	oldStat, _ := old.Stat()
	if !os.SameFile(oldStat, before) {
		t.Error("the open handle no longer refers to the file as it was")
	}
	if got, err := Read(dir); err != nil || got.MTU != 1400 || got.NodeName != "node-1-renamed" {
		t.Fatalf("after replace: %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != FileName {
		t.Errorf("directory holds %v, want only %s (no temp files left)", entries, FileName)
	}

	// An invalid config is refused and leaves the good one in place.
	bad := c
	bad.MTU = 10
	if err := Write(dir, &bad); err == nil {
		t.Fatal("Write accepted an invalid config")
	}
	if got, err := Read(dir); err != nil || got.MTU != 1400 {
		t.Fatalf("after a refused write: %+v, %v", got, err)
	}

	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want it to wrap os.ErrNotExist", err)
	}
	for name, content := range map[string]string{
		"not JSON":  "nodeName=x\n",
		"invalid":   `{"nodeName": "x", "podCIDR": "10.244.1.0/24", "clusterCIDR": "10.244.0.0/16", "mtu": 1, "bpffsRoot": "/b"}`,
		"bad field": `{"nodeName": "x", "podCIDR": "not a prefix"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(Path(dir), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Read(dir)
			if err == nil {
				t.Fatal("Read accepted it")
			}
			if errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%v: a present but broken file must not look missing", err)
			}
			if !strings.Contains(err.Error(), Path(dir)) {
				t.Errorf("%v: the error does not name the file", err)
			}
		})
	}
}
