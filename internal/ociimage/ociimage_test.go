package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tree makes a small host userland: /bin/tool (0755), /etc/motd, /bin/sh -> tool.
func tree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o711))
	must(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o750))
	must(t, os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "bin", "tool"), []byte("#!tool\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "etc", "motd"), []byte("from the tree\n"), 0o600))
	must(t, os.Symlink("tool", filepath.Join(dir, "bin", "sh")))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testSpec uses every kind of input: a host file, inline data, a symlink and a directory tree.
func testSpec(t *testing.T, arch string) Spec {
	t.Helper()
	src := filepath.Join(t.TempDir(), "agent")
	must(t, os.WriteFile(src, []byte("agent binary for "+arch), 0o751))
	return Spec{
		OS: "linux", Arch: arch,
		Layers: []Layer{
			{Dir: tree(t), DirPrefix: "/opt/userland"},
			{Files: []File{
				{Path: "/usr/local/bin/agent", Source: src},
				{Path: "/etc/ssl/certs/ca-certificates.crt", Data: []byte("PEM")},
				{Path: "/usr/bin/agent", Link: "/usr/local/bin/agent"},
				{Path: "/usr/local/bin/setuid", Data: []byte("x"), Mode: 0o755 | os.ModeSetuid},
			}},
		},
		Entrypoint: []string{"/usr/local/bin/agent"},
		Cmd:        []string{"--help"},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin"},
		WorkingDir: "/",
		User:       "0:0",
		Labels:     map[string]string{"org.opencontainers.image.version": "v0.0.0-test"},
	}
}

type tarEntry struct {
	Name     string
	Type     byte
	Mode     int64
	Link     string
	Data     string
	ModTime  int64
	Uid, Gid int
	Uname    string
	Gname    string
}

func readTar(t *testing.T, r io.Reader) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		must(t, err)
		b, err := io.ReadAll(tr)
		must(t, err)
		out = append(out, tarEntry{Name: h.Name, Type: h.Typeflag, Mode: h.Mode, Link: h.Linkname, Data: string(b),
			ModTime: h.ModTime.Unix(), Uid: h.Uid, Gid: h.Gid, Uname: h.Uname, Gname: h.Gname})
	}
}

func layerEntries(t *testing.T, l v1.Layer) []tarEntry {
	t.Helper()
	rc, err := l.Uncompressed()
	must(t, err)
	defer rc.Close()
	return readTar(t, rc)
}

func TestLayerLayout(t *testing.T) {
	img, err := Build(testSpec(t, "amd64"))
	must(t, err)
	layers, err := img.Layers()
	must(t, err)
	if len(layers) != 2 {
		t.Fatalf("got %d layers, want 2", len(layers))
	}
	type want struct {
		name string
		typ  byte
		mode int64
		link string
		data string
	}
	check := func(got []tarEntry, wants []want) {
		t.Helper()
		if len(got) != len(wants) {
			t.Errorf("got %d entries, want %d: %+v", len(got), len(wants), got)
		}
		for i := range min(len(got), len(wants)) {
			g, w := got[i], wants[i]
			if g.Name != w.name || g.Type != w.typ || g.Mode != w.mode || g.Link != w.link || g.Data != w.data {
				t.Errorf("entry %d: got %s type %c mode %o link %q data %q, want %s type %c mode %o link %q data %q",
					i, g.Name, g.Type, g.Mode, g.Link, g.Data, w.name, w.typ, w.mode, w.link, w.data)
			}
			if g.ModTime != 0 || g.Uid != 0 || g.Gid != 0 || g.Uname != "" || g.Gname != "" {
				t.Errorf("%s: mtime %d uid %d gid %d uname %q gname %q, want all zero", g.Name, g.ModTime, g.Uid, g.Gid, g.Uname, g.Gname)
			}
		}
	}
	// The tree keeps its modes (its root too); the prefix's parents are emitted as 0755 directories.
	check(layerEntries(t, layers[0]), []want{
		{"opt/", tar.TypeDir, 0o755, "", ""},
		{"opt/userland/", tar.TypeDir, 0o711, "", ""},
		{"opt/userland/bin/", tar.TypeDir, 0o750, "", ""},
		{"opt/userland/bin/sh", tar.TypeSymlink, 0o777, "tool", ""},
		{"opt/userland/bin/tool", tar.TypeReg, 0o755, "", "#!tool\n"},
		{"opt/userland/etc/", tar.TypeDir, 0o755, "", ""},
		{"opt/userland/etc/motd", tar.TypeReg, 0o600, "", "from the tree\n"},
	})
	check(layerEntries(t, layers[1]), []want{
		{"etc/", tar.TypeDir, 0o755, "", ""},
		{"etc/ssl/", tar.TypeDir, 0o755, "", ""},
		{"etc/ssl/certs/", tar.TypeDir, 0o755, "", ""},
		{"etc/ssl/certs/ca-certificates.crt", tar.TypeReg, 0o644, "", "PEM"},
		{"usr/", tar.TypeDir, 0o755, "", ""},
		{"usr/bin/", tar.TypeDir, 0o755, "", ""},
		{"usr/bin/agent", tar.TypeSymlink, 0o777, "/usr/local/bin/agent", ""},
		{"usr/local/", tar.TypeDir, 0o755, "", ""},
		{"usr/local/bin/", tar.TypeDir, 0o755, "", ""},
		{"usr/local/bin/agent", tar.TypeReg, 0o751, "", "agent binary for amd64"},
		{"usr/local/bin/setuid", tar.TypeReg, 0o4755, "", "x"},
	})
}

func TestFileReplacesTreeEntry(t *testing.T) {
	dir := tree(t)
	img, err := Build(Spec{OS: "linux", Arch: "arm64", Layers: []Layer{{
		Dir:   dir,
		Files: []File{{Path: "/etc/motd", Data: []byte("replaced")}},
	}}})
	must(t, err)
	layers, err := img.Layers()
	must(t, err)
	var motd []string
	for _, e := range layerEntries(t, layers[0]) {
		if e.Name == "etc/motd" {
			motd = append(motd, e.Data)
		}
	}
	if !reflect.DeepEqual(motd, []string{"replaced"}) {
		t.Errorf("etc/motd entries: %q, want the File's content once", motd)
	}
}

func TestConfig(t *testing.T) {
	s := testSpec(t, "arm64")
	img, err := Build(s)
	must(t, err)
	cfg, err := img.ConfigFile()
	must(t, err)
	if cfg.OS != "linux" || cfg.Architecture != "arm64" {
		t.Errorf("platform %s/%s, want linux/arm64", cfg.OS, cfg.Architecture)
	}
	if !cfg.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("created %v, want the epoch", cfg.Created.Time)
	}
	c := cfg.Config
	if !reflect.DeepEqual(c.Entrypoint, s.Entrypoint) || !reflect.DeepEqual(c.Cmd, s.Cmd) || !reflect.DeepEqual(c.Env, s.Env) ||
		c.WorkingDir != s.WorkingDir || c.User != s.User || !reflect.DeepEqual(c.Labels, s.Labels) {
		t.Errorf("config %+v does not carry the spec's %+v", c, s)
	}
	layers, err := img.Layers()
	must(t, err)
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != len(layers) || len(cfg.History) != len(layers) {
		t.Fatalf("rootfs %+v, history %+v: want one diff id and one history entry per layer (%d)", cfg.RootFS, cfg.History, len(layers))
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		must(t, err)
		d, _, err := v1.SHA256(rc)
		must(t, err)
		rc.Close()
		if cfg.RootFS.DiffIDs[i] != d {
			t.Errorf("layer %d: diff id %s, uncompressed content hashes to %s", i, cfg.RootFS.DiffIDs[i], d)
		}
		if !cfg.History[i].Created.Time.Equal(time.Unix(0, 0)) {
			t.Errorf("history %d created %v, want the epoch", i, cfg.History[i].Created.Time)
		}
	}
	// The raw config must not carry anything host-specific (hostname, user, docker version).
	raw, err := img.RawConfigFile()
	must(t, err)
	for _, field := range []string{`"container"`, `"docker_version"`, `"author"`, `"hostname"`} {
		if strings.Contains(string(raw), field) {
			t.Errorf("config has %s: %s", field, raw)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	for name, s := range map[string]Spec{
		"no platform":       {Layers: []Layer{{Files: []File{{Path: "/a", Data: []byte("a")}}}}},
		"relative path":     {OS: "linux", Arch: "amd64", Layers: []Layer{{Files: []File{{Path: "a", Data: []byte("a")}}}}},
		"unclean path":      {OS: "linux", Arch: "amd64", Layers: []Layer{{Files: []File{{Path: "/a/../b", Data: []byte("a")}}}}},
		"twice":             {OS: "linux", Arch: "amd64", Layers: []Layer{{Files: []File{{Path: "/a", Data: []byte("a")}, {Path: "/a", Data: []byte("b")}}}}},
		"parent not a dir":  {OS: "linux", Arch: "amd64", Layers: []Layer{{Files: []File{{Path: "/a", Data: []byte("a")}, {Path: "/a/b", Data: []byte("b")}}}}},
		"missing source":    {OS: "linux", Arch: "amd64", Layers: []Layer{{Files: []File{{Path: "/a", Source: "/nonexistent/edgeplane-ociimage"}}}}},
		"link with content": {OS: "linux", Arch: "amd64", Layers: []Layer{{Files: []File{{Path: "/a", Link: "b", Data: []byte("b")}}}}},
	} {
		if _, err := Build(s); err == nil {
			t.Errorf("%s: Build succeeded, want an error", name)
		}
	}
}

// TestReproducible builds and writes both archive kinds twice from sources whose mtimes differ
// between the builds: the tarballs must be byte-identical.
func TestReproducible(t *testing.T) {
	out := t.TempDir()
	write := func(n int) (docker, oci []byte) {
		amd, arm := testSpec(t, "amd64"), testSpec(t, "arm64")
		// Different mtimes and a different order of Files: neither may show in the output.
		for _, s := range []Spec{amd, arm} {
			src := s.Layers[1].Files[0].Source
			must(t, os.Chtimes(src, time.Unix(int64(1000*n), 0), time.Unix(int64(1000*n), 0)))
			if n == 2 {
				fs := s.Layers[1].Files
				fs[0], fs[len(fs)-1] = fs[len(fs)-1], fs[0]
			}
		}
		a, err := Build(amd)
		must(t, err)
		b, err := Build(arm)
		must(t, err)
		refs := []string{"example.test/edgeplane/test:v1", "example.test/edgeplane/test:latest"}
		dp, op := filepath.Join(out, "docker"), filepath.Join(out, "oci")
		must(t, WriteArchive(dp, refs, a))
		must(t, WriteArchive(op, refs, a, b))
		docker, err = os.ReadFile(dp)
		must(t, err)
		oci, err = os.ReadFile(op)
		must(t, err)
		return docker, oci
	}
	d1, o1 := write(1)
	d2, o2 := write(2)
	if !bytes.Equal(d1, d2) {
		t.Error("two docker-archives of the same inputs differ")
	}
	if !bytes.Equal(o1, o2) {
		t.Error("two OCI archives of the same inputs differ")
	}
	for _, e := range append(readTar(t, bytes.NewReader(d1)), readTar(t, bytes.NewReader(o1))...) {
		if e.ModTime != 0 || e.Uid != 0 || e.Gid != 0 || e.Uname != "" || e.Gname != "" {
			t.Errorf("archive entry %s: mtime %d uid %d gid %d uname %q gname %q, want all zero", e.Name, e.ModTime, e.Uid, e.Gid, e.Uname, e.Gname)
		}
	}
}

func TestDockerArchive(t *testing.T) {
	img, err := Build(testSpec(t, "amd64"))
	must(t, err)
	p := filepath.Join(t.TempDir(), "img.tar")
	must(t, WriteArchive(p, []string{"localhost/edgeplane/pause:lab", "busybox"}, img))
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	files := map[string]string{}
	for _, e := range readTar(t, f) {
		files[e.Name] = e.Data
	}
	var m []dockerManifest
	must(t, json.Unmarshal([]byte(files["manifest.json"]), &m))
	if len(m) != 1 {
		t.Fatalf("manifest.json: %d images, want 1", len(m))
	}
	if want := []string{"localhost/edgeplane/pause:lab", "docker.io/library/busybox:latest"}; !reflect.DeepEqual(m[0].RepoTags, want) {
		t.Errorf("RepoTags %q, want %q", m[0].RepoTags, want)
	}
	cfg, err := img.RawConfigFile()
	must(t, err)
	if files[m[0].Config] != string(cfg) {
		t.Errorf("config %s is not the image's config", m[0].Config)
	}
	layers, err := img.Layers()
	must(t, err)
	if len(m[0].Layers) != len(layers) {
		t.Fatalf("manifest.json lists %d layers, image has %d", len(m[0].Layers), len(layers))
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		must(t, err)
		b, err := io.ReadAll(rc)
		must(t, err)
		if files[m[0].Layers[i]] != string(b) {
			t.Errorf("layer %d (%s) is not the image's layer", i, m[0].Layers[i])
		}
	}
}

func TestOCIArchive(t *testing.T) {
	amd, err := Build(testSpec(t, "amd64"))
	must(t, err)
	arm, err := Build(testSpec(t, "arm64"))
	must(t, err)
	p := filepath.Join(t.TempDir(), "img.tar")
	must(t, WriteArchive(p, []string{"ghcr.io/edgeplane/edgeplane:v1"}, amd, arm))
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	files := map[string]string{}
	for _, e := range readTar(t, f) {
		files[e.Name] = e.Data
	}
	if files["oci-layout"] != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout: %q", files["oci-layout"])
	}
	var top v1.IndexManifest
	must(t, json.Unmarshal([]byte(files["index.json"]), &top))
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json: %d entries, want 1", len(top.Manifests))
	}
	d := top.Manifests[0]
	if d.Annotations[annotationImageName] != "ghcr.io/edgeplane/edgeplane:v1" || d.Annotations[annotationRefName] != "v1" {
		t.Errorf("index.json annotations %v", d.Annotations)
	}
	var index v1.IndexManifest
	raw := files["blobs/sha256/"+d.Digest.Hex]
	must(t, json.Unmarshal([]byte(raw), &index))
	if h, _, _ := v1.SHA256(strings.NewReader(raw)); h != d.Digest || int64(len(raw)) != d.Size {
		t.Errorf("image index blob does not match its descriptor")
	}
	var platforms []string
	for i, m := range index.Manifests {
		platforms = append(platforms, m.Platform.String())
		img := []v1.Image{amd, arm}[i]
		want, err := img.Digest()
		must(t, err)
		if m.Digest != want {
			t.Errorf("index entry %d: digest %s, want %s", i, m.Digest, want)
		}
		// Every blob the image references is in the archive.
		mf, err := img.Manifest()
		must(t, err)
		for _, b := range append([]v1.Descriptor{mf.Config}, mf.Layers...) {
			if got, ok := files["blobs/sha256/"+b.Digest.Hex]; !ok || int64(len(got)) != b.Size {
				t.Errorf("blob %s missing or of the wrong size", b.Digest)
			}
		}
	}
	if want := []string{"linux/amd64", "linux/arm64"}; !reflect.DeepEqual(platforms, want) {
		t.Errorf("index platforms %q, want %q", platforms, want)
	}
	if err := WriteArchive(p, []string{"x:y"}, amd, amd); err == nil {
		t.Error("two images of one platform: WriteArchive succeeded, want an error")
	}
}
