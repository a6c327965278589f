package nameindex

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// servicesFile is the Service file's name in the index directory.
const servicesFile = "services.json"

// Service is one Service and the frontends this node's agent programmed for it in lb_svc_map: the
// maps key frontends by address, port, protocol and scope only.
type Service struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	Frontends []Frontend `json:"frontends"`
}

// FullName is "namespace/name".
func (s Service) FullName() string { return s.Namespace + "/" + s.Name }

// Frontend is an lb_svc_map key (struct lb_svc_key) in words.
type Frontend struct {
	IP    netip.Addr `json:"ip"` // the VIP; 0.0.0.0 for a node port
	Port  uint16     `json:"port"`
	Proto string     `json:"proto"` // "tcp", "udp", "sctp": lb.Proto's String
	Scope string     `json:"scope"` // "internal", "external": lb.Scope's String
}

func (f Frontend) String() string {
	return fmt.Sprintf("%s %s/%s", f.Scope, netip.AddrPortFrom(f.IP, f.Port), f.Proto)
}

func compareFrontends(a, b Frontend) int {
	return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port), strings.Compare(a.Proto, b.Proto),
		strings.Compare(a.Scope, b.Scope))
}

// servicesDoc is services.json: an object, so that fields can be added beside the list.
type servicesDoc struct {
	Services []Service `json:"services"`
}

// ServicesPath is the Service file's path.
func ServicesPath(runDir string) string { return filepath.Join(runDir, Dir, servicesFile) }

// WriteServices replaces the Service file with services, sorted by namespace and name, each one's
// frontends sorted by address, port, protocol and scope. Services without frontends are left out.
func WriteServices(runDir string, services []Service) error {
	sorted := make([]Service, 0, len(services))
	for _, s := range services {
		if len(s.Frontends) == 0 {
			continue
		}
		s.Frontends = slices.Clone(s.Frontends)
		slices.SortFunc(s.Frontends, compareFrontends)
		sorted = append(sorted, s)
	}
	slices.SortFunc(sorted, func(a, b Service) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return writeList(filepath.Join(runDir, Dir), servicesFile, "services", sorted)
}

// ReadServices reads the Service file; a missing one is an error wrapping fs.ErrNotExist.
func ReadServices(runDir string) ([]Service, error) {
	b, err := os.ReadFile(ServicesPath(runDir))
	if err != nil {
		return nil, fmt.Errorf("name index: %w", err)
	}
	var doc servicesDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("name index: parsing %s: %w", ServicesPath(runDir), err)
	}
	return doc.Services, nil
}
