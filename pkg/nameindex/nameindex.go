// Package nameindex is the name index: the Kubernetes names behind the addresses in the pinned maps,
// kept as files beside node.json so that edgeplanectl can show them without the agent (whose
// informers hold the names) running. The maps stay name-free: the datapath needs none.
//
// Layout under the run directory (the agent's --run-dir, the CNI plugin's runDir, default
// /run/edgeplane):
//
//	names/pods/<pod IP>.json  one file per local pod IP (Pod), written by the CNI plugin on ADD,
//	                          removed on DEL (matched by container ID and interface) and by GC
//	names/nodes.json          every node the maps route to (Nodes), this one included, rewritten
//	                          by the agent after each change of the node set
//	names/services.json       every Service with frontends in this node's lb_svc_map (Services),
//	                          rewritten by the agent after each change of them (services.go)
//
// Every write is a temporary file renamed over the target, so a reader sees a whole old or a
// whole new file, and concurrent ADDs never share a file (IPAM hands each address to one
// attachment). The index is advisory: writers never fail a CNI call or a reconcile over it, and
// readers treat a missing, unreadable or stale entry as "no name". Fields are only ever added.
package nameindex

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgeplane/edgeplane/pkg/atomicfile"
)

// Dir is the index's directory inside the run directory.
const Dir = "names"

// Paths of the index inside the run directory.
const (
	podsDir   = "pods"
	nodesFile = "nodes.json"
)

// tmpAge is how old a temporary file must be before GC takes it for a leftover of a writer that
// died between create and rename, not one still writing.
const tmpAge = time.Minute

// Pod is one local pod attachment: the file names/pods/<IP>.json.
type Pod struct {
	IP netip.Addr `json:"ip"`
	// Namespace, Name and UID come from CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID),
	// which kubelet's runtimes pass; "" when the runtime passed none.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	// ContainerID and Interface identify the attachment (CNI_CONTAINERID, CNI_IFNAME).
	ContainerID string `json:"containerID"`
	Interface   string `json:"interface"`
	// HostInterface is the pod's host-side veth. A reader compares it with the interface of the
	// endpoints_map entry to tell a stale file from the pod that holds the address now.
	HostInterface string `json:"hostInterface"`
}

// FullName is "namespace/name", or "" when the runtime did not say.
func (p Pod) FullName() string {
	if p.Name == "" {
		return ""
	}
	if p.Namespace == "" {
		return p.Name
	}
	return p.Namespace + "/" + p.Name
}

// Node is one node the maps route to, as this node's agent sees it.
type Node struct {
	Name string `json:"name"`
	// NodeIP is its tunnel endpoint: the routes_map value and nodes_map key (a NAT address for a
	// node reached across a public pair).
	NodeIP  netip.Addr   `json:"nodeIP"`
	PodCIDR netip.Prefix `json:"podCIDR"`
	Pool    string       `json:"pool"`   // its node pool label; "" when in no pool
	Domain  string       `json:"domain"` // its network domain's name
	// ThisNode marks the node whose agent wrote the file.
	ThisNode bool `json:"thisNode"`
}

// nodesDoc is nodes.json: an object, so that fields can be added beside the list (writeList
// writes it an item at a time).
type nodesDoc struct {
	Nodes []Node `json:"nodes"`
}

// PodsDir is where the pod files are.
func PodsDir(runDir string) string { return filepath.Join(runDir, Dir, podsDir) }

// NodesPath is the node file's path.
func NodesPath(runDir string) string { return filepath.Join(runDir, Dir, nodesFile) }

func podPath(runDir string, ip netip.Addr) string {
	return filepath.Join(PodsDir(runDir), ip.String()+".json")
}

// WritePod records p under its IP, replacing what a previous pod of that address left.
func WritePod(runDir string, p Pod) error {
	if !p.IP.IsValid() {
		return errors.New("name index: pod without an IP")
	}
	return writeJSON(PodsDir(runDir), p.IP.String()+".json", p)
}

// RemovePod deletes the entries of the attachment (containerID, ifName). Entries of other
// attachments are kept, also when they hold an address this one held before: DEL of a pod must
// not take the name of the pod that has its address now. A missing index is not an error.
func RemovePod(runDir, containerID, ifName string) error {
	return prunePods(runDir, func(p Pod) bool { return p.ContainerID != containerID || p.Interface != ifName }, false)
}

// PrunePods deletes the entries keep refuses, those that cannot be parsed, and temporary files
// left by a writer that died (GC).
func PrunePods(runDir string, keep func(Pod) bool) error {
	return prunePods(runDir, keep, true)
}

func prunePods(runDir string, keep func(Pod) bool, gc bool) error {
	dir := PodsDir(runDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("name index: %w", err)
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			if info, err := e.Info(); gc && err == nil && time.Since(info.ModTime()) > tmpAge {
				errs = append(errs, removeFile(path))
			}
			continue
		}
		p, err := readPod(path)
		switch {
		case errors.Is(err, fs.ErrNotExist): // removed concurrently
		case err != nil:
			if gc {
				errs = append(errs, removeFile(path))
			}
		case !keep(p):
			errs = append(errs, removeFile(path))
		}
	}
	return errors.Join(errs...)
}

// BadEntriesError says that some files of the index could not be read; the others were.
type BadEntriesError struct {
	Dir   string
	Count int
	First error
}

func (e *BadEntriesError) Error() string {
	return fmt.Sprintf("%d unreadable entries under %s skipped (first: %v)", e.Count, e.Dir, e.First)
}

// ReadPods reads every pod entry by IP. A missing or unreadable directory is an error (wrapping
// fs.ErrNotExist when missing) with a nil map; files that cannot be parsed are skipped and
// reported as a *BadEntriesError beside the entries that could.
func ReadPods(runDir string) (map[netip.Addr]Pod, error) {
	dir := PodsDir(runDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("name index: %w", err)
	}
	pods := make(map[netip.Addr]Pod, len(entries))
	var bad *BadEntriesError
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		p, err := readPod(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by a DEL since the listing
		}
		if err == nil && p.IP.String() != name {
			err = fmt.Errorf("%s holds the entry of %s", e.Name(), p.IP)
		}
		if err != nil {
			if bad == nil {
				bad = &BadEntriesError{Dir: dir, First: err}
			}
			bad.Count++
			continue
		}
		pods[p.IP] = p
	}
	if bad != nil {
		return pods, bad
	}
	return pods, nil
}

func readPod(path string) (Pod, error) {
	var p Pod
	b, err := os.ReadFile(path)
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("parsing %s: %w", path, err)
	}
	return p, nil
}

// WriteNodes replaces the node file with nodes, sorted by name.
func WriteNodes(runDir string, nodes []Node) error {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return writeList(filepath.Join(runDir, Dir), nodesFile, "nodes", sorted)
}

// ReadNodes reads the node file; a missing one is an error wrapping fs.ErrNotExist.
func ReadNodes(runDir string) ([]Node, error) {
	b, err := os.ReadFile(NodesPath(runDir))
	if err != nil {
		return nil, fmt.Errorf("name index: %w", err)
	}
	var doc nodesDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("name index: parsing %s: %w", NodesPath(runDir), err)
	}
	return doc.Nodes, nil
}

// Remove deletes the whole index (agent uninstall); a missing one is not an error.
func Remove(runDir string) error {
	if err := os.RemoveAll(filepath.Join(runDir, Dir)); err != nil {
		return fmt.Errorf("removing the name index: %w", err)
	}
	return nil
}

// writeJSON stores v as dir/name, whole or not at all (pkg/atomicfile); 0600: root's.
func writeJSON(dir, name string, v any) error {
	if err := atomicfile.WriteJSON(filepath.Join(dir, name), v, 0o600); err != nil {
		return fmt.Errorf("name index: %w", err)
	}
	return nil
}

func removeFile(path string) error {
	if err := atomicfile.Remove(path); err != nil {
		return fmt.Errorf("name index: %w", err)
	}
	return nil
}
