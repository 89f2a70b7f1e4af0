package main

import (
	"archive/tar"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// testInputs writes two fake ELF binaries and a one-certificate CA bundle.
func testInputs(t *testing.T) (Options, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<33, 0), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	bins := map[string]string{}
	for _, arch := range []string{"amd64", "arm64"} {
		p := filepath.Join(dir, "kvproxy-"+arch)
		if err := os.WriteFile(p, []byte("\x7fELF fake kvproxy for "+arch), 0o755); err != nil {
			t.Fatal(err)
		}
		bins[arch] = p
	}
	return Options{CABundle: ca, Version: testVersion, Commit: testCommit, Source: "https://github.com/kvproxy/kvproxy",
		Created: time.Unix(1700000000, 0).UTC()}, bins
}

// TestLayoutArchive builds the multi-arch index from fake binaries and
// checks the OCI layout archive: one index over amd64 and arm64, every blob
// present under its digest, deterministic bytes, and readable by
// go-containerregistry's layout package (what crane uses).
func TestLayoutArchive(t *testing.T) {
	o, bins := testInputs(t)
	ref, _ := name.NewTag("example.test/kvproxy:" + testVersion)
	write := func() []byte {
		idx, err := BuildIndex(o, []string{"amd64", "arm64"}, bins)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteLayoutArchive(&buf, idx, ref, o.Created); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	archive := write()
	if again := write(); !bytes.Equal(archive, again) {
		t.Fatal("two builds from the same inputs gave different archives")
	}

	// Read the archive back: entries, order, ownership, times.
	files := map[string][]byte{}
	var names []string
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(o.Created) {
			t.Errorf("%s: owner %d:%d mtime %v, want 0:0 and %v", h.Name, h.Uid, h.Gid, h.ModTime, o.Created)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
	}
	if !slices.IsSorted(names) {
		t.Errorf("entries not sorted: %q", names)
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", files["oci-layout"])
	}
	for n, data := range files {
		if hx, ok := strings.CutPrefix(n, "blobs/sha256/"); ok && hx != "" {
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != hx {
				t.Errorf("blob %s holds content of digest %x", n, sum)
			}
		}
	}

	var top v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &top); err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 || top.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("index.json = %s, want one descriptor of an OCI image index", files["index.json"])
	}
	if a := top.Manifests[0].Annotations; a["org.opencontainers.image.ref.name"] != testVersion || a["io.containerd.image.name"] != ref.String() {
		t.Errorf("index.json annotations %v", a)
	}
	var inner v1.IndexManifest
	if err := json.Unmarshal(files["blobs/sha256/"+top.Manifests[0].Digest.Hex], &inner); err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, m := range inner.Manifests {
		if m.MediaType != types.OCIManifestSchema1 || m.Platform == nil {
			t.Errorf("index entry %+v, want an OCI manifest with a platform", m)
			continue
		}
		platforms = append(platforms, m.Platform.OS+"/"+m.Platform.Architecture)
	}
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index platforms %q, want linux/amd64 and linux/arm64", platforms)
	}

	var legacy []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &legacy); err != nil {
		t.Fatal(err)
	}
	if len(legacy) != 2 || !slices.Equal(legacy[0].RepoTags, []string{ref.String(), ref.String() + "-amd64"}) ||
		!slices.Equal(legacy[1].RepoTags, []string{ref.String() + "-arm64"}) {
		t.Errorf("manifest.json = %s", files["manifest.json"])
	}
	for _, e := range legacy {
		for _, p := range append([]string{e.Config}, e.Layers...) {
			if _, ok := files[p]; !ok {
				t.Errorf("manifest.json names %s, which is not in the archive", p)
			}
		}
	}

	// The layout as crane reads it: each image validates and has its arch.
	dir := t.TempDir()
	for n, data := range files {
		if strings.HasSuffix(n, "/") {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lp, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Errorf("index does not validate: %v", err)
	}
	for _, m := range inner.Manifests {
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != m.Platform.Architecture || cf.OS != "linux" {
			t.Errorf("image %s config says %s/%s, index says %s", m.Digest, cf.OS, cf.Architecture, m.Platform.Architecture)
		}
	}
}

// TestRunPlatforms: the command line writes the archive and refuses to
// mix the single-image and multi-arch modes.
func TestRunPlatforms(t *testing.T) {
	o, bins := testInputs(t)
	out := filepath.Join(t.TempDir(), "kvproxy.oci.tar")
	var stdout bytes.Buffer
	err := run([]string{"-platform", "linux/amd64=" + bins["amd64"], "-platform", "linux/arm64=" + bins["arm64"],
		"-ca-bundle", o.CABundle, "-created", "1700000000", "-tag", "example.test/kvproxy:v1", "-out", out}, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "example.test/kvproxy:v1@sha256:") {
		t.Errorf("stdout %q", stdout.String())
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-binary", bins["amd64"], "-platform", "linux/arm64=" + bins["arm64"]},
		{"-platform", "darwin/arm64=" + bins["arm64"]},
		{"-platform", "linux/arm64=" + bins["arm64"], "-platform", "linux/arm64=" + bins["arm64"]},
	} {
		if err := run(append(args, "-ca-bundle", o.CABundle, "-out", out), io.Discard); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}
