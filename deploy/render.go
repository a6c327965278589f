// Package deploy renders edgeplane's Kubernetes manifests: deploy/base is a kustomize base, and
// deploy/edgeplane.yaml is the same objects as one file for `kubectl apply -f`, built from the base
// with kustomize's own library (`go generate ./deploy`). tests/deploy fails when they differ.
package deploy

//go:generate go run ./gen

import (
	"fmt"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Header starts the rendered file.
const Header = "# Generated from deploy/base by `go generate ./deploy`; edit the base, not this file.\n"

// Render builds the kustomization in dir, as `kustomize build dir` does, and returns the rendered
// file: the header, then the objects as a YAML stream.
func Render(dir string) ([]byte, error) {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("building the kustomization in %s: %w", dir, err)
	}
	body, err := resources.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("encoding the objects of %s: %w", dir, err)
	}
	return append([]byte(Header), body...), nil
}
