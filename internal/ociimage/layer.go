package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// entry is one tar entry of a layer, named without the leading "/".
type entry struct {
	name   string
	typ    byte // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	mode   int64
	source string // host file for a regular entry, or
	data   []byte
	link   string
}

// buildLayer collects l's entries, adds the missing parent directories and writes them sorted by
// name into a gzip-compressed tar.
func buildLayer(l Layer) (*gzipLayer, error) {
	entries := map[string]*entry{}
	if l.Dir != "" {
		prefix := l.DirPrefix
		if prefix == "" {
			prefix = "/"
		}
		if err := walkDir(l.Dir, prefix, entries); err != nil {
			return nil, err
		}
	}
	fromFiles := map[string]bool{}
	for _, f := range l.Files {
		e, err := fileEntry(f)
		if err != nil {
			return nil, err
		}
		if fromFiles[e.name] {
			return nil, fmt.Errorf("%s: listed twice", f.Path)
		}
		fromFiles[e.name] = true
		entries[e.name] = e
	}
	if err := addParents(entries); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)

	var compressed bytes.Buffer
	zw, err := gzip.NewWriterLevel(&compressed, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	diffID := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diffID))
	for _, n := range names {
		if err := writeEntry(tw, entries[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	digest := sha256.Sum256(compressed.Bytes())
	return &gzipLayer{
		compressed: compressed.Bytes(),
		digest:     v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(digest[:])},
		diffID:     v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diffID.Sum(nil))},
	}, nil
}

// imageName turns an absolute image path into a tar entry name ("/usr/bin" -> "usr/bin").
func imageName(p string) (string, error) {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return "", fmt.Errorf("%q: want a clean absolute path below /", p)
	}
	return p[1:], nil
}

func fileEntry(f File) (*entry, error) {
	name, err := imageName(f.Path)
	if err != nil {
		return nil, err
	}
	e := &entry{name: name}
	switch {
	case f.Link != "":
		if f.Source != "" || f.Data != nil {
			return nil, fmt.Errorf("%s: a symlink takes neither Source nor Data", f.Path)
		}
		e.typ, e.mode, e.link = tar.TypeSymlink, 0o777, f.Link
	case f.Source != "":
		if f.Data != nil {
			return nil, fmt.Errorf("%s: both Source and Data set", f.Path)
		}
		st, err := os.Stat(f.Source)
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: source %s is not a regular file", f.Path, f.Source)
		}
		e.typ, e.mode, e.source = tar.TypeReg, tarMode(st.Mode()), f.Source
	default:
		e.typ, e.mode, e.data = tar.TypeReg, 0o644, f.Data
	}
	if f.Mode != 0 {
		e.mode = tarMode(f.Mode)
	}
	return e, nil
}

// walkDir adds the tree at dir (directories, regular files, symlinks) as entries below prefix.
func walkDir(dir, prefix string, entries map[string]*entry) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		target := path.Join(prefix, filepath.ToSlash(rel))
		if target == "/" {
			return nil
		}
		name, err := imageName(target)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := &entry{name: name, mode: tarMode(info.Mode())}
		switch {
		case info.IsDir():
			e.typ = tar.TypeDir
		case info.Mode().IsRegular():
			e.typ, e.source = tar.TypeReg, p
		case info.Mode()&fs.ModeSymlink != 0:
			if e.link, err = os.Readlink(p); err != nil {
				return err
			}
			e.typ, e.mode = tar.TypeSymlink, 0o777
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, info.Mode().Type())
		}
		entries[name] = e
		return nil
	})
}

// addParents adds a 0755 directory for every missing ancestor and checks the present ones are
// directories.
func addParents(entries map[string]*entry) error {
	for name := range entries {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if p, ok := entries[dir]; ok {
				if p.typ != tar.TypeDir {
					return fmt.Errorf("/%s: parent /%s is not a directory", name, dir)
				}
				continue
			}
			entries[dir] = &entry{name: dir, typ: tar.TypeDir, mode: 0o755}
		}
	}
	return nil
}

// tarMode is the permission bits of m plus setuid, setgid and sticky, as tar encodes them.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func writeEntry(tw *tar.Writer, e *entry) error {
	hdr := &tar.Header{Typeflag: e.typ, Name: e.name, Mode: e.mode, ModTime: epoch, Linkname: e.link}
	if e.typ == tar.TypeDir {
		hdr.Name += "/"
	}
	if e.typ != tar.TypeReg {
		return tw.WriteHeader(hdr)
	}
	if e.source == "" {
		hdr.Size = int64(len(e.data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	f, err := os.Open(e.source)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if n, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("copying %s: %w", e.source, err)
	} else if n != hdr.Size {
		return fmt.Errorf("copying %s: size changed while reading", e.source)
	}
	return nil
}

// gzipLayer is a layer held compressed in memory, with both digests computed once.
type gzipLayer struct {
	compressed     []byte
	digest, diffID v1.Hash
}

func (l *gzipLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *gzipLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *gzipLayer) Size() (int64, error)     { return int64(len(l.compressed)), nil }
func (l *gzipLayer) MediaType() (types.MediaType, error) {
	return types.OCILayer, nil
}

func (l *gzipLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.compressed)), nil
}

func (l *gzipLayer) Uncompressed() (io.ReadCloser, error) {
	return gzip.NewReader(bytes.NewReader(l.compressed))
}

var _ v1.Layer = (*gzipLayer)(nil)
