// Package ociimage builds container images from host files with Go alone (no Docker, no
// registry) and writes them as tarballs containerd's `ctr images import` takes.
//
// How: each Layer becomes one gzip-compressed tar built in memory. Entries are sorted by path,
// every parent directory is emitted, and every header carries mtime 0, uid/gid 0 and no user or
// group names, so the same inputs give the same layer digest on any host. The config and the OCI
// manifest are marshalled here (created = the Unix epoch, os/architecture set: containerd's import
// drops images whose config names no platform) and handed to go-containerregistry's partial
// package, which completes the v1.Image. WriteArchive writes a docker-archive for one image and an
// OCI image layout with an index of all platforms for several; both are written entry by entry in
// a fixed order with the same normalised tar headers, so the archives are byte-identical too.
package ociimage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one entry of a layer.
type File struct {
	Path   string      // absolute path in the image, "/usr/local/bin/edgeplane-agent"
	Source string      // host file to copy; or
	Data   []byte      // the content
	Mode   os.FileMode // 0: Source's mode, or 0o644 for Data
	Link   string      // when set: a symlink to Link
}

// Layer is one filesystem layer: Files, and/or the host directory tree Dir put at DirPrefix.
// A File at the same path as an entry of Dir replaces it.
type Layer struct {
	Files     []File
	Dir       string // a host directory tree (e.g. a `dpkg-deb -x` userland) put at DirPrefix
	DirPrefix string // "" = "/"
}

// Spec describes an image for one platform.
type Spec struct {
	OS, Arch             string // "linux", "amd64" | "arm64"
	Variant              string // optional, e.g. "v7" for arm
	Layers               []Layer
	Entrypoint, Cmd, Env []string
	WorkingDir, User     string
	Labels               map[string]string
}

// epoch is the only timestamp an image built here carries.
var epoch = time.Unix(0, 0).UTC()

// createdBy names this builder in each layer's history entry.
const createdBy = "edgeplane internal/ociimage"

// Build makes the image s describes. The result is reproducible: the same Spec over the same file
// contents and modes gives the same digests.
func Build(s Spec) (v1.Image, error) {
	if s.OS == "" || s.Arch == "" {
		return nil, fmt.Errorf("building image: os and architecture are required (got %q/%q)", s.OS, s.Arch)
	}
	img := &image{layers: map[v1.Hash]*gzipLayer{}}
	cfg := v1.ConfigFile{
		Architecture: s.Arch,
		OS:           s.OS,
		Variant:      s.Variant,
		Created:      v1.Time{Time: epoch},
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{}},
		Config: v1.Config{
			Entrypoint: s.Entrypoint,
			Cmd:        s.Cmd,
			Env:        s.Env,
			WorkingDir: s.WorkingDir,
			User:       s.User,
			Labels:     s.Labels,
		},
	}
	manifest := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Layers: []v1.Descriptor{}}
	for i, l := range s.Layers {
		layer, err := buildLayer(l)
		if err != nil {
			return nil, fmt.Errorf("building layer %d: %w", i, err)
		}
		img.layers[layer.digest] = layer
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, layer.diffID)
		cfg.History = append(cfg.History, v1.History{Created: v1.Time{Time: epoch}, CreatedBy: createdBy})
		manifest.Layers = append(manifest.Layers, v1.Descriptor{
			MediaType: types.OCILayer,
			Size:      int64(len(layer.compressed)),
			Digest:    layer.digest,
		})
	}
	var err error
	if img.config, err = marshal(cfg); err != nil {
		return nil, fmt.Errorf("marshalling config: %w", err)
	}
	manifest.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(img.config))}
	if manifest.Config.Digest, _, err = v1.SHA256(bytes.NewReader(img.config)); err != nil {
		return nil, err
	}
	if img.manifest, err = marshal(manifest); err != nil {
		return nil, fmt.Errorf("marshalling manifest: %w", err)
	}
	return partial.CompressedToImage(img)
}

// marshal is json.Marshal without HTML escaping (a "<" in a label stays readable).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// image is the partial.CompressedImageCore Build hands to go-containerregistry.
type image struct {
	config, manifest []byte
	layers           map[v1.Hash]*gzipLayer
}

func (i *image) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *image) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *image) RawManifest() ([]byte, error)        { return i.manifest, nil }

func (i *image) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == (v1.Hash{}) {
		return nil, fmt.Errorf("empty layer digest")
	}
	cfgDigest, _, err := v1.SHA256(bytes.NewReader(i.config))
	if err != nil {
		return nil, err
	}
	if h == cfgDigest {
		return partial.ConfigLayer(i)
	}
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("image has no blob %s", h)
}
