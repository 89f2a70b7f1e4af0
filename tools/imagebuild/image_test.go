package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

const (
	testVersion = "v0.0.0-imagetest"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
	testEpoch   = "1700000000"
)

// repoRoot is the kvproxy repository, two levels up from this module.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "kvproxy")); err != nil {
		t.Fatalf("kvproxy repository not found at %s: %v", root, err)
	}
	return root
}

// TestBuildScript runs build.sh (what `make image` runs) and opens the image
// it writes: user, entrypoint, labels, files, and the binary itself.
func TestBuildScript(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image's binary runs only on linux")
	}
	repoRoot(t)
	out := filepath.Join(t.TempDir(), "kvproxy-image.tar")
	cmd := exec.Command("bash", "build.sh")
	cmd.Env = append(os.Environ(),
		"VERSION="+testVersion, "COMMIT="+testCommit, "SOURCE_DATE_EPOCH="+testEpoch,
		"GOARCH="+runtime.GOARCH, "OUT="+out, "IMAGE=example.test/kvproxy")
	cmd.Stdout, cmd.Stderr = &bytes.Buffer{}, &bytes.Buffer{}
	if err := cmd.Run(); err != nil {
		t.Fatalf("build.sh: %v\nstdout:\n%s\nstderr:\n%s", err, cmd.Stdout, cmd.Stderr)
	}
	t.Logf("build.sh: %s", cmd.Stdout)

	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{"example.test/kvproxy:" + testVersion}) {
		t.Errorf("tarball tags = %+v, want example.test/kvproxy:%s", manifest, testVersion)
	}

	if err := validate.Image(img); err != nil {
		t.Errorf("image does not validate (digests, sizes, diff IDs): %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, cf)

	files := readFiles(t, img)
	wantPaths := []string{"etc", "etc/group", "etc/passwd", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca-certificates.crt", "kvproxy"}
	if got := sortedKeys(files); !slices.Equal(got, wantPaths) {
		t.Errorf("image files = %q, want exactly %q (no shell, nothing else)", got, wantPaths)
	}
	for p, f := range files {
		if f.hdr.Uid != 0 || f.hdr.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root (the nonroot user must not be able to replace it)", p, f.hdr.Uid, f.hdr.Gid)
		}
		if !f.hdr.ModTime.Equal(time.Unix(1700000000, 0)) {
			t.Errorf("%s mtime %v, want SOURCE_DATE_EPOCH", p, f.hdr.ModTime)
		}
	}
	if f := files["kvproxy"]; f.hdr.Mode != 0o755 || f.hdr.Typeflag != tar.TypeReg {
		t.Errorf("/kvproxy mode %o type %c, want a 0755 regular file", f.hdr.Mode, f.hdr.Typeflag)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(files["etc/ssl/certs/ca-certificates.crt"].data) {
		t.Error("CA bundle holds no certificate")
	}
	if n := bytes.Count(files["etc/ssl/certs/ca-certificates.crt"].data, []byte("BEGIN CERTIFICATE")); n < 50 {
		t.Errorf("CA bundle holds %d certificates, want a full public bundle (Entra and Key Vault chain to public roots)", n)
	}
	checkUserEntry(t, cf.Config.User, string(files["etc/passwd"].data), string(files["etc/group"].data))

	// The binary is static and stamped: run it, as the container would.
	bin := filepath.Join(t.TempDir(), "kvproxy")
	if err := os.WriteFile(bin, files["kvproxy"].data, 0o755); err != nil {
		t.Fatal(err)
	}
	vout, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("/kvproxy version: %v\n%s", err, vout)
	}
	if !strings.Contains(string(vout), testVersion) || !strings.Contains(string(vout), testCommit[:7]) {
		t.Errorf("/kvproxy version printed %q, want version %s and commit %s stamped by -ldflags", vout, testVersion, testCommit)
	}
	checkStatic(t, files["kvproxy"].data)

	// Reproducible: the same inputs give the same digest.
	again, err := Build(Options{
		Binary: bin, CABundle: writeTemp(t, files["etc/ssl/certs/ca-certificates.crt"].data), Arch: runtime.GOARCH,
		Version: testVersion, Commit: testCommit, Source: "https://github.com/kvproxy/kvproxy", Created: time.Unix(1700000000, 0).UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	// A docker-archive stores the config byte for byte (its digest covers
	// the layer's diff ID) but not the manifest: compare the config, and
	// the manifest digest build.sh printed.
	c1, _ := img.ConfigName()
	c2, _ := again.ConfigName()
	if c1 != c2 {
		t.Errorf("rebuilding from the same inputs gave config %s, the tarball holds %s", c2, c1)
	}
	d2, _ := again.Digest()
	if !strings.Contains(cmd.Stdout.(*bytes.Buffer).String(), "@"+d2.String()) {
		t.Errorf("build.sh printed %q, rebuilding gives digest %s", cmd.Stdout, d2)
	}
}

func checkConfig(t *testing.T, cf *v1.ConfigFile) {
	t.Helper()
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (numeric, so runAsNonRoot can verify it)", cf.Config.User)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/kvproxy"}) || len(cf.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [/kvproxy] and no cmd", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if got := sortedKeys(cf.Config.ExposedPorts); !slices.Equal(got, []string{"8380/tcp", "8381/tcp"}) {
		t.Errorf("exposed ports %q", got)
	}
	want := map[string]string{
		"org.opencontainers.image.title":    "kvproxy",
		"org.opencontainers.image.version":  testVersion,
		"org.opencontainers.image.revision": testCommit,
		"org.opencontainers.image.created":  "2023-11-14T22:13:20Z",
		"org.opencontainers.image.source":   "https://github.com/kvproxy/kvproxy",
	}
	for k, v := range want {
		if cf.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], v)
		}
	}
	if !cf.Created.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH", cf.Created)
	}
}

// checkUserEntry checks that the config's uid:gid has passwd and group entries.
func checkUserEntry(t *testing.T, user, passwd, group string) {
	t.Helper()
	uid, gid, _ := strings.Cut(user, ":")
	found := false
	for line := range strings.Lines(passwd) {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) == 7 && f[2] == uid && f[3] == gid && f[0] == "nonroot" {
			found = true
		}
	}
	if !found {
		t.Errorf("/etc/passwd has no nonroot entry for %s:\n%s", user, passwd)
	}
	if !strings.Contains(group, "nonroot:x:"+gid+":") {
		t.Errorf("/etc/group has no nonroot group %s:\n%s", gid, group)
	}
}

// checkStatic fails if the ELF binary asks for a dynamic loader.
func checkStatic(t *testing.T, bin []byte) {
	t.Helper()
	if bytes.Contains(bin, []byte("/lib64/ld-linux")) || bytes.Contains(bin, []byte("/lib/ld-linux")) || bytes.Contains(bin, []byte("ld-musl")) {
		t.Error("/kvproxy names a dynamic loader; build it with CGO_ENABLED=0")
	}
}

type tarFile struct {
	hdr  *tar.Header
	data []byte
}

func readFiles(t *testing.T, img v1.Image) map[string]tarFile {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]tarFile{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, "/")] = tarFile{hdr: h, data: data}
	}
	return files
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// dockerfile is the parsed final stage of the repository's Dockerfile.
type dockerfile struct {
	from       string
	copies     map[string]string // destination -> source (with --from=stage: prefix)
	user       string
	entrypoint []string
	expose     []string
	labels     map[string]string
	buildCmds  []string // RUN lines of every stage
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines, drop comments.
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	var d dockerfile
	fields := regexp.MustCompile(`\s+`)
	labelRE := regexp.MustCompile(`([a-z.]+)="([^"]*)"`)
	for _, l := range lines {
		inst, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(inst) {
		case "FROM": // a new stage starts: keep only the last one's settings
			d = dockerfile{from: rest, copies: map[string]string{}, labels: map[string]string{}, buildCmds: d.buildCmds}
		case "RUN":
			d.buildCmds = append(d.buildCmds, rest)
		case "COPY":
			f := fields.Split(rest, -1)
			src, dst := f[len(f)-2], f[len(f)-1]
			if strings.HasPrefix(f[0], "--from=") {
				src = strings.TrimPrefix(f[0], "--from=") + ":" + src
			}
			d.copies[dst] = src
		case "USER":
			d.user = rest
		case "EXPOSE":
			d.expose = fields.Split(rest, -1)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT must be exec form (no shell in the image): %v", err)
			}
		case "LABEL":
			for _, m := range labelRE.FindAllStringSubmatch(rest, -1) {
				d.labels[m[1]] = m[2]
			}
		}
	}
	return d
}

// TestDockerfileMatchesImagebuild keeps the two build paths equivalent: the
// Dockerfile's final stage must ship the same files, user, entrypoint, ports
// and labels as Build, and compile with the same flags as build.sh.
func TestDockerfileMatchesImagebuild(t *testing.T) {
	root := repoRoot(t)
	d := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if d.from != "scratch" {
		t.Errorf("final stage FROM %q, want scratch (the image holds only what imagebuild puts there)", d.from)
	}
	wantCopies := map[string]string{
		"/kvproxy":                           "build:/out/kvproxy",
		"/etc/ssl/certs/ca-certificates.crt": "build:/etc/ssl/certs/ca-certificates.crt",
		"/etc/passwd":                        "tools/imagebuild/rootfs/etc/passwd",
		"/etc/group":                         "tools/imagebuild/rootfs/etc/group",
	}
	for dst, src := range wantCopies {
		if d.copies[dst] != src {
			t.Errorf("Dockerfile copies %q to %s, want %q", d.copies[dst], dst, src)
		}
	}
	if len(d.copies) != len(wantCopies) {
		t.Errorf("Dockerfile final stage copies %v, imagebuild ships %v", d.copies, wantCopies)
	}
	if d.user != User {
		t.Errorf("USER %q, imagebuild uses %q", d.user, User)
	}
	if !slices.Equal(d.entrypoint, []string{BinaryPath}) {
		t.Errorf("ENTRYPOINT %q, want [%q]", d.entrypoint, BinaryPath)
	}
	var ports []string
	for _, p := range d.expose {
		ports = append(ports, p+"/tcp")
	}
	if !slices.Equal(ports, ExposedPorts) {
		t.Errorf("EXPOSE %q, imagebuild exposes %q", d.expose, ExposedPorts)
	}
	want := Labels(Options{Version: "${VERSION}", Commit: "${COMMIT}", Source: "https://github.com/kvproxy/kvproxy"})
	want["org.opencontainers.image.created"] = "${CREATED}"
	if len(d.labels) != len(want) {
		t.Errorf("Dockerfile labels %v, imagebuild sets %v", d.labels, want)
	}
	for k, v := range want {
		if d.labels[k] != v {
			t.Errorf("Dockerfile label %s = %q, imagebuild sets %q", k, d.labels[k], v)
		}
	}

	script, err := os.ReadFile("build.sh")
	if err != nil {
		t.Fatal(err)
	}
	var goBuild string
	for _, c := range d.buildCmds {
		if strings.Contains(c, "go build") {
			goBuild = c
		}
	}
	for _, flag := range []string{"CGO_ENABLED=0", "-trimpath", "-buildvcs=false", "-s -w", "internal/version.Version=", "internal/version.Commit=", "./cmd/kvproxy"} {
		if !strings.Contains(goBuild, flag) {
			t.Errorf("Dockerfile go build lacks %q: %s", flag, goBuild)
		}
		if !strings.Contains(string(script), flag) {
			t.Errorf("build.sh lacks %q", flag)
		}
	}
}

// TestDockerignoreKeepsBuildInputs checks the .dockerignore allowlist with
// Docker's own matcher: every file `go build ./cmd/kvproxy` reads (Go and
// embedded files of each package in the main module, go.mod, go.sum) and every
// file the final stage copies from the context is sent; .git, dist/ and tests
// are not.
func TestDockerignoreKeepsBuildInputs(t *testing.T) {
	root := repoRoot(t)
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	excluded := func(rel string) bool {
		// Docker's legacy builder and BuildKit both decide with this call.
		ok, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`, "./cmd/kvproxy")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, exitStderr(err))
	}
	var need []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rel, err := filepath.Rel(root, f[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range f[1:] {
			need = append(need, filepath.ToSlash(filepath.Join(rel, name)))
		}
	}
	if len(need) == 0 {
		t.Fatal("go list found no file of cmd/kvproxy")
	}
	need = append(need, "go.mod", "go.sum", "tools/imagebuild/rootfs/etc/passwd", "tools/imagebuild/rootfs/etc/group")
	for _, p := range need {
		if excluded(p) {
			t.Errorf(".dockerignore excludes %s, which the image build needs", p)
		}
	}
	for _, p := range []string{".git/config", "dist/kvproxy-image.tar", "proxy/proxy_test.go", "charts/kvproxy/values.yaml", "deploy/sidecar/deployment.yaml", "auth/testdata/x.json", ".env"} {
		if !excluded(p) {
			t.Errorf(".dockerignore sends %s to the build context; it is not needed there", p)
		}
	}
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
