package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BuildIndex builds one image per architecture (binaries maps GOARCH to a
// static linux binary; o.Arch is ignored) and one OCI image index over them,
// in the order of archs. Each entry carries media type, digest, size and
// platform only (no artifactType, which go-containerregistry's mutate would
// add and older skopeo refuses to copy with --preserve-digests).
func BuildIndex(o Options, archs []string, binaries map[string]string) (v1.ImageIndex, error) {
	idx := &imageIndex{
		manifest: &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}},
		images:   map[v1.Hash]v1.Image{},
	}
	for _, arch := range archs {
		oa := o
		oa.Arch, oa.Binary = arch, binaries[arch]
		if oa.Binary == "" {
			return nil, fmt.Errorf("no binary for linux/%s", arch)
		}
		img, err := Build(oa)
		if err != nil {
			return nil, fmt.Errorf("linux/%s: %w", arch, err)
		}
		raw, err := img.RawManifest()
		if err != nil {
			return nil, err
		}
		h, size, err := v1.SHA256(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		idx.manifest.Manifests = append(idx.manifest.Manifests, v1.Descriptor{
			MediaType: types.OCIManifestSchema1, Digest: h, Size: size,
			Platform: &v1.Platform{OS: "linux", Architecture: arch},
		})
		idx.images[h] = img
	}
	raw, err := json.Marshal(idx.manifest)
	if err != nil {
		return nil, err
	}
	idx.raw = raw
	return idx, nil
}

// imageIndex is an OCI image index over images held in memory.
type imageIndex struct {
	raw      []byte
	manifest *v1.IndexManifest
	images   map[v1.Hash]v1.Image
}

func (i *imageIndex) MediaType() (types.MediaType, error)       { return types.OCIImageIndex, nil }
func (i *imageIndex) Digest() (v1.Hash, error)                  { return partial.Digest(i) }
func (i *imageIndex) Size() (int64, error)                      { return partial.Size(i) }
func (i *imageIndex) IndexManifest() (*v1.IndexManifest, error) { return i.manifest.DeepCopy(), nil }
func (i *imageIndex) RawManifest() ([]byte, error)              { return i.raw, nil }
func (i *imageIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	return nil, fmt.Errorf("index %s holds no index", h)
}
func (i *imageIndex) Image(h v1.Hash) (v1.Image, error) {
	if img, ok := i.images[h]; ok {
		return img, nil
	}
	return nil, fmt.Errorf("index holds no image %s", h)
}

// layoutEntry is one file of an OCI image layout.
type layoutEntry struct {
	name string
	data []byte
}

// WriteLayoutArchive writes idx as an OCI image layout (oci-layout,
// index.json, blobs/sha256/…) in a tar archive: what `skopeo copy
// oci-archive:`, `docker load` (Docker 25+ reads index.json) and containerd
// import take. index.json holds one descriptor, of the index, annotated
// with ref's tag (org.opencontainers.image.ref.name) and full name
// (io.containerd.image.name). For Docker's classic image store, which reads
// only manifest.json, the archive also has a manifest.json listing each
// platform's config and layers, the first platform tagged ref and every
// platform tagged ref-<arch>.
//
// The archive is deterministic: entries sorted by name, owned by 0:0, with
// mtime, mode 0644 (0755 for directories) and no other metadata.
func WriteLayoutArchive(w io.Writer, idx v1.ImageIndex, ref name.Tag, mtime time.Time) error {
	blobs := map[string][]byte{}
	add := func(h v1.Hash, data []byte) { blobs[h.Hex] = data }

	rawIdx, err := idx.RawManifest()
	if err != nil {
		return err
	}
	idxDigest, err := idx.Digest()
	if err != nil {
		return err
	}
	add(idxDigest, rawIdx)
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	type dockerEntry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var legacy []dockerEntry
	for i, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		raw, err := img.RawManifest()
		if err != nil {
			return err
		}
		add(d.Digest, raw)
		cfgName, err := img.ConfigName()
		if err != nil {
			return err
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			return err
		}
		add(cfgName, cfg)
		e := dockerEntry{Config: "blobs/sha256/" + cfgName.Hex}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			h, err := l.Digest()
			if err != nil {
				return err
			}
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return err
			}
			add(h, data)
			e.Layers = append(e.Layers, "blobs/sha256/"+h.Hex)
		}
		arch := "unknown"
		if d.Platform != nil {
			arch = d.Platform.Architecture
		}
		if i == 0 {
			e.RepoTags = append(e.RepoTags, ref.String())
		}
		e.RepoTags = append(e.RepoTags, ref.Context().Tag(ref.TagStr()+"-"+arch).String())
		legacy = append(legacy, e)
	}

	top := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIImageIndex,
			Size:      int64(len(rawIdx)),
			Digest:    idxDigest,
			Annotations: map[string]string{
				"org.opencontainers.image.ref.name": ref.TagStr(),
				"io.containerd.image.name":          ref.String(),
			},
		}},
	}
	indexJSON, err := json.Marshal(top)
	if err != nil {
		return err
	}
	manifestJSON, err := json.Marshal(legacy)
	if err != nil {
		return err
	}

	entries := []layoutEntry{
		{name: "blobs/"},
		{name: "blobs/sha256/"},
		{name: "index.json", data: indexJSON},
		{name: "manifest.json", data: manifestJSON},
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	for hex, data := range blobs {
		entries = append(entries, layoutEntry{name: "blobs/sha256/" + hex, data: data})
	}
	slices.SortFunc(entries, func(a, b layoutEntry) int { return strings.Compare(a.name, b.name) })

	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(e.data)), Format: tar.FormatUSTAR}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// writeLayoutFile writes the archive to path through a temporary file, so
// a failed build leaves no partial archive behind.
func writeLayoutFile(path string, idx v1.ImageIndex, ref name.Tag, mtime time.Time) error {
	var buf bytes.Buffer
	if err := WriteLayoutArchive(&buf, idx, ref, mtime); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
