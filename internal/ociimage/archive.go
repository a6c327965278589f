package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations containerd's importer reads to name the images of an OCI archive: the full
// reference first, the OCI ref name (the tag) as a fallback.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// WriteArchive writes imgs to path, named by refs (at least one; tags such as
// "ghcr.io/edgeplane/edgeplane:v1.2.3", normalised the way containerd names images, so "busybox"
// becomes "docker.io/library/busybox:latest").
//
// One image gives a docker-archive (manifest.json naming refs as RepoTags), which Docker's
// `docker load` and containerd's `ctr -n k8s.io images import` both take. Several images (one per
// platform) give an OCI image layout archive: an image index listing each image with its platform,
// named by every ref in index.json; `ctr images import` imports it for the host's platform
// (--all-platforms for all). The file is written beside path and renamed into place.
func WriteArchive(path string, refs []string, imgs ...v1.Image) (err error) {
	if len(imgs) == 0 {
		return fmt.Errorf("writing %s: no image", path)
	}
	if len(refs) == 0 {
		return fmt.Errorf("writing %s: no reference to name the image", path)
	}
	names := make([]string, len(refs))
	for i, r := range refs {
		if names[i], err = normalizeRef(r); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	tw := tar.NewWriter(f)
	if len(imgs) == 1 {
		err = writeDockerArchive(tw, names, imgs[0])
	} else {
		err = writeOCIArchive(tw, names, imgs)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tw.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// normalizeRef returns ref as containerd names it: registry, repository and tag spelled out.
func normalizeRef(ref string) (string, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	registry := tag.RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	return registry + "/" + tag.RepositoryStr() + ":" + tag.TagStr(), nil
}

// dockerManifest is one entry of a docker-archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// writeDockerArchive writes the layers, the config and manifest.json, as `docker save` lays them
// out (blobs named by their hex digest).
func writeDockerArchive(tw *tar.Writer, refs []string, img v1.Image) error {
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	m := dockerManifest{Config: cfgName.Hex + ".json", RepoTags: refs, Layers: []string{}}
	written := map[v1.Hash]bool{}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		file := d.Hex + ".tar.gz"
		m.Layers = append(m.Layers, file)
		if written[d] {
			continue
		}
		written[d] = true
		if err := writeLayerBlob(tw, file, l); err != nil {
			return err
		}
	}
	if err := writeFile(tw, m.Config, cfg); err != nil {
		return err
	}
	manifest, err := marshal([]dockerManifest{m})
	if err != nil {
		return err
	}
	return writeFile(tw, "manifest.json", manifest)
}

// writeOCIArchive writes an OCI image layout: oci-layout, index.json naming an image index of
// imgs by refs, and the blobs sorted by digest.
func writeOCIArchive(tw *tar.Writer, refs []string, imgs []v1.Image) error {
	blobs := map[v1.Hash][]byte{}
	layers := map[v1.Hash]v1.Layer{}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	platforms := map[string]bool{}
	for _, img := range imgs {
		cfg, err := img.ConfigFile()
		if err != nil {
			return err
		}
		p := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
		if platforms[p.String()] {
			return fmt.Errorf("two images for platform %s", p.String())
		}
		platforms[p.String()] = true
		raw, err := img.RawManifest()
		if err != nil {
			return err
		}
		desc, err := blobDescriptor(raw)
		if err != nil {
			return err
		}
		if desc.MediaType, err = img.MediaType(); err != nil {
			return err
		}
		desc.Platform = &p
		index.Manifests = append(index.Manifests, desc)
		blobs[desc.Digest] = raw
		cfgName, err := img.ConfigName()
		if err != nil {
			return err
		}
		if blobs[cfgName], err = img.RawConfigFile(); err != nil {
			return err
		}
		ls, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range ls {
			d, err := l.Digest()
			if err != nil {
				return err
			}
			layers[d] = l
		}
	}
	rawIndex, err := marshal(index)
	if err != nil {
		return err
	}
	indexDesc, err := blobDescriptor(rawIndex)
	if err != nil {
		return err
	}
	indexDesc.MediaType = types.OCIImageIndex
	blobs[indexDesc.Digest] = rawIndex

	top := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, r := range refs {
		d := indexDesc
		tag, err := name.NewTag(r)
		if err != nil {
			return err
		}
		d.Annotations = map[string]string{annotationImageName: r, annotationRefName: tag.TagStr()}
		top.Manifests = append(top.Manifests, d)
	}
	rawTop, err := marshal(top)
	if err != nil {
		return err
	}
	if err := writeFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := writeFile(tw, "index.json", rawTop); err != nil {
		return err
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	digests := make([]v1.Hash, 0, len(blobs)+len(layers))
	for d := range blobs {
		digests = append(digests, d)
	}
	for d := range layers {
		if _, ok := blobs[d]; !ok {
			digests = append(digests, d)
		}
	}
	sort.Slice(digests, func(i, j int) bool { return digests[i].String() < digests[j].String() })
	for _, d := range digests {
		file := "blobs/" + d.Algorithm + "/" + d.Hex
		if b, ok := blobs[d]; ok {
			err = writeFile(tw, file, b)
		} else {
			err = writeLayerBlob(tw, file, layers[d])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func blobDescriptor(b []byte) (v1.Descriptor, error) {
	d, n, err := v1.SHA256(bytes.NewReader(b))
	return v1.Descriptor{Digest: d, Size: n}, err
}

// writeFile writes one regular archive entry with the normalised header.
func writeFile(tw *tar.Writer, file string, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: file, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

// writeLayerBlob writes l's compressed bytes as one archive entry.
func writeLayerBlob(tw *tar.Writer, file string, l v1.Layer) error {
	size, err := l.Size()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: file, Mode: 0o644, Size: size, ModTime: epoch}); err != nil {
		return err
	}
	if n, err := io.Copy(tw, rc); err != nil {
		return fmt.Errorf("writing layer %s: %w", file, err)
	} else if n != size {
		return fmt.Errorf("writing layer %s: %d bytes, manifest says %d", file, n, size)
	}
	return nil
}
