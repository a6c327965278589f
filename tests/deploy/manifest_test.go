// Package deploy tests the install manifests: deploy/edgeplane.yaml is what deploy/base renders
// to; its containers' commands and flags are accepted by the binaries and are in the image; and,
// against a real kube-apiserver (tests/lab), every object passes a server-side dry-run apply, the
// agent's service account can do exactly what the agent does, and the ValidatingAdmissionPolicy
// keeps its node patches to its own node's annotations. The API tests need root and `make test`'s
// binaries, like the lab; without root they skip.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/edgeplane/edgeplane/deploy"
	"github.com/edgeplane/edgeplane/pkg/domain"
	"github.com/edgeplane/edgeplane/tests/lab"
)

const (
	deployDir    = "../../deploy"
	manifestPath = deployDir + "/edgeplane.yaml"
	dockerfile   = "../../Dockerfile"
)

// objects reads the rendered manifest.
func objects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	f, err := os.Open(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding %s: %v", manifestPath, err)
		}
		if m == nil {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	if len(objs) == 0 {
		t.Fatalf("%s holds no objects", manifestPath)
	}
	return objs
}

// typed finds the one object of a kind and converts it.
func typed[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) *T {
	t.Helper()
	return typedNamed[T](t, objs, kind, "")
}

// typedNamed is the one object of kind called name ("" = the only one of its kind).
func typedNamed[T any](t *testing.T, objs []*unstructured.Unstructured, kind, name string) *T {
	t.Helper()
	var found *T
	for _, o := range objs {
		if o.GetKind() != kind || (name != "" && o.GetName() != name) {
			continue
		}
		if found != nil {
			t.Fatalf("more than one %s in %s", kind, manifestPath)
		}
		found = new(T)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, found, true); err != nil {
			t.Fatalf("%s %s: %v", kind, o.GetName(), err)
		}
	}
	if found == nil {
		t.Fatalf("no %s in %s", kind, manifestPath)
	}
	return found
}

func TestRenderedManifestIsTheBase(t *testing.T) {
	want, err := deploy.Render(filepath.Join(deployDir, "base"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what deploy/base renders to: run `go generate ./deploy` and commit both", manifestPath)
	}
}

// binDir is EDGEPLANE_BIN (`make build`), or a skip for a non-root run without it, like the lab.
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(lab.EnvEdgeplaneBin)
	if dir == "" {
		if os.Geteuid() != 0 {
			t.Skipf("%s is not set (make build; make test sets it)", lab.EnvEdgeplaneBin)
		}
		t.Fatalf("%s is not set: run `make test`, or `make build` and set it to ./bin", lab.EnvEdgeplaneBin)
	}
	return dir
}

// varRef is Kubernetes' $(VAR) reference in command and args.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// containerEnv resolves a container's env as the kubelet would on a node named nodeName, from the
// manifest's ConfigMap. Unresolvable required references are errors.
func containerEnv(t *testing.T, c corev1.Container, cm *corev1.ConfigMap, nodeName string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env[e.Name] = nodeName
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = cm.Namespace // the DaemonSet's, which is the ConfigMap's
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if ref.Name != cm.Name {
				t.Errorf("container %s env %s refers to ConfigMap %s, not %s", c.Name, e.Name, ref.Name, cm.Name)
				continue
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if ref.Optional == nil || !*ref.Optional {
					t.Errorf("container %s env %s: ConfigMap %s has no key %s", c.Name, e.Name, cm.Name, ref.Key)
				}
				continue
			}
			env[e.Name] = v
		default:
			t.Errorf("container %s env %s: unhandled valueFrom %+v", c.Name, e.Name, e.ValueFrom)
		}
	}
	return env
}

// argv is the container's command and args with $(VAR) expanded.
func argv(t *testing.T, c corev1.Container, env map[string]string) []string {
	t.Helper()
	var out []string
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		out = append(out, varRef.ReplaceAllStringFunc(a, func(ref string) string {
			name := varRef.FindStringSubmatch(ref)[1]
			v, ok := env[name]
			if !ok {
				t.Errorf("container %s: %s refers to %s, which its env does not define (it would stay literal)", c.Name, a, name)
			}
			return v
		}))
	}
	return out
}

// TestContainerFlagsAccepted runs each container's binary with its manifest command line (ConfigMap
// values substituted) in its --validate-flags mode: a renamed or mistyped flag fails here, not on
// every node at once.
func TestContainerFlagsAccepted(t *testing.T) {
	bin := binDir(t)
	objs := objects(t)
	ds := typed[appsv1.DaemonSet](t, objs, "DaemonSet")
	cm := typedNamed[corev1.ConfigMap](t, objs, "ConfigMap", "edgeplane-config")
	containers := append(append([]corev1.Container{}, ds.Spec.Template.Spec.InitContainers...), ds.Spec.Template.Spec.Containers...)
	for _, c := range containers {
		t.Run(c.Name, func(t *testing.T) {
			if len(c.Command) == 0 {
				t.Fatalf("container %s has no command: the image's entrypoint would run", c.Name)
			}
			env := containerEnv(t, c, cm, "node-1")
			args := argv(t, c, env)
			exe := filepath.Join(bin, path.Base(args[0]))
			run := func(extra ...string) (string, error) {
				cmd := exec.CommandContext(t.Context(), exe, append(append(args[1:], extra...), "--validate-flags")...)
				cmd.Env = []string{"PATH=/usr/bin:/bin"}
				for k, v := range env {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			if out, err := run(); err != nil {
				t.Fatalf("%s %q rejects the manifest's flags: %v\n%s", exe, args[1:], err, out)
			}
			// The validation mode must really validate, or the check above proves nothing.
			if out, err := run("--no-such-flag"); err == nil {
				t.Errorf("%s accepts an unknown flag in --validate-flags mode:\n%s", exe, out)
			}
			if out, err := run("--mtu=1"); err == nil {
				t.Errorf("%s accepts --mtu=1 in --validate-flags mode:\n%s", exe, out)
			}
		})
	}
}

// TestDomainConfigMapParses: the shipped domain ConfigMap is one the agent accepts, and it is the
// default model (shipping it changes nothing until an operator edits it).
func TestDomainConfigMapParses(t *testing.T) {
	objs := objects(t)
	cm := typedNamed[corev1.ConfigMap](t, objs, "ConfigMap", "edgeplane-domains")
	m, err := domain.Parse([]byte(cm.Data[domain.ConfigKey]))
	if err != nil {
		t.Fatalf("the agent would refuse the shipped %s: %v", cm.Name, err)
	}
	if !m.Equal(domain.DefaultModel()) {
		t.Errorf("the shipped domain configuration is not the default one")
	}
	ds := typed[appsv1.DaemonSet](t, objs, "DaemonSet")
	var arg string
	for _, a := range ds.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--domain-config=") {
			arg = a
		}
	}
	if arg != "--domain-config=$(POD_NAMESPACE)/"+cm.Name || cm.Namespace != ds.Namespace {
		t.Errorf("the agent reads %q, the ConfigMap is %s/%s", arg, cm.Namespace, cm.Name)
	}
}

// TestImageHasManifestPaths checks that the files the DaemonSet names in the image are the ones
// the Dockerfile copies there.
func TestImageHasManifestPaths(t *testing.T) {
	f, err := os.Open(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inImage := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[0] != "COPY" {
			continue
		}
		var paths []string
		for _, p := range fields[1:] {
			if !strings.HasPrefix(p, "--") {
				paths = append(paths, p)
			}
		}
		dst := paths[len(paths)-1]
		for _, src := range paths[:len(paths)-1] {
			inImage[path.Join(dst, path.Base(src))] = true
			inImage[path.Clean(dst)] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	ds := typed[appsv1.DaemonSet](t, objects(t), "DaemonSet")
	for _, c := range append(append([]corev1.Container{}, ds.Spec.Template.Spec.InitContainers...), ds.Spec.Template.Spec.Containers...) {
		want := []string{c.Command[0]}
		for _, a := range c.Args {
			for _, flag := range []string{"--cni-plugin=", "--install-missing-plugins-from="} {
				if v, ok := strings.CutPrefix(a, flag); ok {
					want = append(want, v)
				}
			}
		}
		for _, p := range want {
			if !inImage[p] {
				t.Errorf("container %s uses %s, which the Dockerfile does not copy into the image", c.Name, p)
			}
		}
	}
}
