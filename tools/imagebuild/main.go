// Command imagebuild assembles the kvproxy container image without a Docker
// engine: one layer on an empty base holding the static kvproxy binary, a CA
// bundle and passwd/group entries for the nonroot user, written as a
// docker-archive tarball that `docker load`, `podman load`, `crane push` and
// `skopeo copy docker-archive:` all accept (-binary), or, for a release, one
// image per architecture under one OCI image index, written as an OCI image
// layout archive (-platform linux/amd64=BIN -platform linux/arm64=BIN; see
// WriteLayoutArchive).
//
// The image matches what the repository's Dockerfile builds (FROM scratch,
// the same files, user, entrypoint, ports and labels); image_test.go checks
// both against each other. build.sh builds the binary and runs this tool;
// `make image` calls build.sh.
//
// The output is reproducible: file times and the image's creation time come
// from -created (build.sh passes SOURCE_DATE_EPOCH or the commit time), so
// the same binary and CA bundle give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rootfs holds /etc/passwd and /etc/group; the Dockerfile copies the same
// files, so both build paths give the nonroot user (65532) a name.
//
//go:embed rootfs/etc/passwd rootfs/etc/group
var rootfs embed.FS

// Image constants shared with the Dockerfile (image_test.go compares them).
const (
	// User is the image's user: nonroot in rootfs/etc/passwd.
	User = "65532:65532"
	// BinaryPath is where the kvproxy binary lives; it is the entrypoint.
	BinaryPath = "/kvproxy"
	// CABundlePath is where Go's crypto/x509 looks first on Linux.
	CABundlePath = "/etc/ssl/certs/ca-certificates.crt"
)

// ExposedPorts are the proxy and admin listener ports.
var ExposedPorts = []string{"8380/tcp", "8381/tcp"}

// Options describe one image build.
type Options struct {
	Binary   string    // path to a static linux kvproxy binary
	CABundle string    // path to a PEM CA bundle
	Arch     string    // GOARCH of the binary: amd64, arm64, …
	Version  string    // org.opencontainers.image.version
	Commit   string    // org.opencontainers.image.revision
	Source   string    // org.opencontainers.image.source
	Created  time.Time // image creation and file modification time
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	var o Options
	var out, tag, created string
	fl.StringVar(&o.Binary, "binary", "", "static linux kvproxy binary (required)")
	fl.StringVar(&o.CABundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle to ship at "+CABundlePath)
	fl.StringVar(&o.Arch, "arch", "amd64", "GOARCH the binary was built for")
	fl.StringVar(&o.Version, "version", "dev", "version label")
	fl.StringVar(&o.Commit, "commit", "unknown", "revision label")
	fl.StringVar(&o.Source, "source", "https://github.com/kvproxy/kvproxy", "source label")
	fl.StringVar(&created, "created", "0", "creation time: Unix seconds (SOURCE_DATE_EPOCH) or RFC 3339")
	fl.StringVar(&out, "out", "dist/kvproxy-image.tar", "docker-archive tarball to write")
	fl.StringVar(&tag, "tag", "ghcr.io/kvproxy/kvproxy:dev", "image reference recorded in the tarball")
	var archs []string
	binaries := map[string]string{}
	fl.Func("platform", "linux/ARCH=BINARY: one image of a multi-arch OCI layout archive (repeat per architecture; replaces -binary and -arch)", func(v string) error {
		plat, bin, ok := strings.Cut(v, "=")
		arch, isLinux := strings.CutPrefix(plat, "linux/")
		if !ok || !isLinux || arch == "" || bin == "" {
			return fmt.Errorf("%q: want linux/ARCH=BINARY", v)
		}
		if _, dup := binaries[arch]; dup {
			return fmt.Errorf("linux/%s given twice", arch)
		}
		archs = append(archs, arch)
		binaries[arch] = bin
		return nil
	})
	if err := fl.Parse(args); err != nil {
		return err
	}
	if o.Binary == "" && len(archs) == 0 {
		return errors.New("-binary or -platform is required")
	}
	if o.Binary != "" && len(archs) > 0 {
		return errors.New("-binary builds one docker-archive image, -platform a multi-arch OCI layout archive: give one of them")
	}
	t, err := parseCreated(created)
	if err != nil {
		return err
	}
	o.Created = t
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("-tag %q: %w", tag, err)
	}
	if len(archs) > 0 {
		idx, err := BuildIndex(o, archs, binaries)
		if err != nil {
			return err
		}
		if err := writeLayoutFile(out, idx, ref, o.Created); err != nil {
			return fmt.Errorf("writing %s: %w", out, err)
		}
		digest, err := idx.Digest()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: %s@%s (index over linux/%s)\n", out, ref, digest, strings.Join(archs, ", linux/"))
		return nil
	}
	img, err := Build(o)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s@%s\n", out, ref, digest)
	return nil
}

func parseCreated(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("-created %q: want Unix seconds or RFC 3339", s)
	}
	return t.UTC(), nil
}

// Labels returns the image's org.opencontainers.image.* labels.
func Labels(o Options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "kvproxy",
		"org.opencontainers.image.description": "Token-brokering reverse proxy for Azure Key Vault",
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Commit,
		"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
	}
}

// Build assembles the image in memory.
func Build(o Options) (v1.Image, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s is not an ELF binary (build it with GOOS=linux CGO_ENABLED=0)", o.Binary)
	}
	ca, err := os.ReadFile(o.CABundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w (install Debian's ca-certificates or pass -ca-bundle)", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", o.CABundle)
	}
	passwd, err := fs.ReadFile(rootfs, "rootfs/etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := fs.ReadFile(rootfs, "rootfs/etc/group")
	if err != nil {
		return nil, err
	}

	layerTar, err := layerTar(o.Created, []file{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: group},
		{name: "etc/passwd", mode: 0o644, data: passwd},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(CABundlePath, "/"), mode: 0o644, data: ca},
		{name: strings.TrimPrefix(BinaryPath, "/"), mode: 0o755, data: bin},
	})
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.Created},
			CreatedBy: "imagebuild: /kvproxy, CA bundle, passwd and group",
			Comment:   "kvproxy " + o.Version,
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = o.Arch
	cf.Created = v1.Time{Time: o.Created}
	cf.Config.User = User
	cf.Config.Entrypoint = []string{BinaryPath}
	cf.Config.Cmd = nil
	cf.Config.Labels = Labels(o)
	cf.Config.ExposedPorts = map[string]struct{}{}
	for _, p := range ExposedPorts {
		cf.Config.ExposedPorts[p] = struct{}{}
	}
	return mutate.ConfigFile(img, cf)
}

type file struct {
	name string
	mode int64
	dir  bool
	data []byte
}

// layerTar writes files owned by root with fixed times, in the given order.
func layerTar(mtime time.Time, files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name:    f.name,
			Mode:    f.mode,
			ModTime: mtime,
			Uname:   "root",
			Gname:   "root",
			Format:  tar.FormatUSTAR,
		}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
